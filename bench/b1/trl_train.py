"""B1 with TRL's SFTTrainer on prompt/completion rows (loss on the completion only). Runs inside the `trl` venv.

    python trl_train.py --model DIR --data train_pc.jsonl --out DIR

TRL's own defaults decide everything B1 does not fix (precision, collation). Writes DIR/b1_result.json like
hf_train.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
from flops import LORA_TARGETS  # noqa: E402


def main() -> int:
    p = data.peer_parser(__doc__.splitlines()[0])
    p.add_argument("--max-length", type=int, default=data.MAX_LENGTH)
    args = p.parse_args()

    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=str(args.data), split="train")
    cfg = SFTConfig(
        output_dir=str(args.out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        seed=args.seed, logging_steps=args.logging_steps, save_strategy="no", eval_strategy="no", report_to="none",
        gradient_checkpointing=False, use_cpu=True, max_length=args.max_length, completion_only_loss=True,
        packing=False, dataloader_num_workers=0)
    trainer = SFTTrainer(model=args.model, args=cfg, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(args.model),
                         peft_config=LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                                target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    out = trainer.train()
    adapter = args.out / "adapter"
    trainer.save_model(str(adapter))
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    dtype = str(next(trainer.model.parameters()).dtype).replace("torch.", "")
    result = {"train_runtime": out.metrics.get("train_runtime"), "train_loss": out.metrics.get("train_loss"),
              "last_logged_loss": logged[-1] if logged else None, "steps": trainer.state.global_step,
              "adapter": str(adapter), "precision": ("bf16 autocast" if cfg.bf16 else "fp32") + f", weights {dtype}"}
    (args.out / "b1_result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("b1_result", json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
