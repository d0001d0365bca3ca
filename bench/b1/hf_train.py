"""B1 with a plain transformers Trainer + peft: the script a user would write. Runs inside the `hf` venv.

    python hf_train.py --model DIR --data train_alpaca.json --out DIR [--rows-per-step 4 ...]

Writes DIR/b1_result.json: train_runtime and train_loss as Trainer reports them, the last logged loss, the
adapter folder and the precision it trained in.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data  # noqa: E402
from flops import LORA_TARGETS  # noqa: E402


def main() -> int:
    args = data.peer_parser(__doc__.splitlines()[0]).parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainingArguments, set_seed)

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = json.loads(args.data.read_text(encoding="utf-8"))
    encoded = []
    for row in rows:
        ids, labels = data.encode(tokenizer, row)
        encoded.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                             target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    targs = TrainingArguments(
        output_dir=str(args.out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        seed=args.seed, logging_steps=args.logging_steps, save_strategy="no", eval_strategy="no", report_to="none",
        gradient_checkpointing=False, use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=targs, train_dataset=encoded,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    out = trainer.train()
    adapter = args.out / "adapter"
    trainer.save_model(str(adapter))
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {"train_runtime": out.metrics.get("train_runtime"), "train_loss": out.metrics.get("train_loss"),
              "last_logged_loss": logged[-1] if logged else None, "steps": trainer.state.global_step,
              "adapter": str(adapter), "precision": "bf16 autocast" if targs.bf16 else "fp32"}
    (args.out / "b1_result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("b1_result", json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
