"""Run configuration: small frozen dataclasses, flat keys as users type them, aliases from other tools.

Every key carries a help text (the reference docs are generated from it). Loading only parses and
validates; derived values (the learning rate a method implies, the save cadence, ...) come from
functions in ``hone.config.derive``, never written back into the config.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml


def opt(default: Any, help: str, *, choices: Sequence[Any] | None = None, secret: bool = False) -> Any:
    """A config field with its help text (and the values it may take)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "secret": secret}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelCfg:
    model: str = opt("smollm2-135m", "Model to tune: a built-in name (see `hone models list`), a local "
                     "Hugging Face directory, a local .gguf file, or a hub id (needs network).")
    model_revision: str | None = opt(None, "Hub revision (branch, tag or commit) when `model` is a hub id.")
    template: str = opt("auto", "Chat template: `auto` uses the tokenizer's own chat template; or a built-in "
                        "or registered template name (see `hone templates list`).")
    system: str | None = opt(None, "System prompt put before every conversation that has none. Unset: the "
                             "template's default.")
    dtype: str = opt("auto", "Weights and compute dtype. `auto`: bf16 on a GPU that supports it, else fp16 on "
                     "CUDA; on a CPU, training runs in bf16 where this CPU's bf16 matmuls measure at least 1.5x "
                     "faster than fp32 (the run's first lines say which and why), else fp32. Frozen weights are held in this dtype (bf16 on CPU too: half the "
                     "memory); trained weights stay fp32 and compute runs under autocast.",
                     choices=("auto", "fp32", "bf16", "fp16"))
    attn_impl: str = opt("auto", "Attention implementation. `auto`: the best the model supports, as transformers "
                         "picks it (sdpa where the model has it, else eager); any other value is used as given.",
                         choices=("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3",
                                  "flex_attention"))
    full_forward_loss: bool = opt(False, "Compute the loss through the model's own full forward (logits at every "
                                  "position) instead of hone's fast path. Exact for any model family, slower and "
                                  "heavier; needed for a model type the fast path does not cover.")
    trust_remote_code: bool = opt(False, "Allow a model directory's own Python code (`auto_map`) to run. "
                                  "Off by default: such code runs with your permissions.")
    quantization_bit: int = opt(0, "Load the base model quantized with bitsandbytes: 4 or 8 (QLoRA; needs "
                                "CUDA). 0 loads it unquantized.", choices=(0, 4, 8))
    quant_type: str = opt("nf4", "4-bit quantization data type.", choices=("nf4", "fp4"))
    double_quant: bool = opt(True, "Quantize the 4-bit quantization constants too (saves ~0.4 bit/param).")
    quant_compute_dtype: str = opt("auto", "Dtype 4-bit weights are dequantized to for compute; `auto` follows "
                                   "`dtype`.", choices=("auto", "fp32", "bf16", "fp16"))
    hub_token: str | None = opt(None, "Access token for a private hub model. Never written to logs or "
                                "saved configs.", secret=True)


@dataclass(frozen=True)
class DataCfg:
    dataset: tuple[str, ...] = opt((), "Training data: files (.json .jsonl .csv .tsv .parquet .txt), folders, or "
                                   "registered names; `NAME#N` takes N rows (more than it has repeats it); "
                                   "listing a set twice weights it twice.")
    val_dataset: tuple[str, ...] = opt((), "Validation data, same forms as `dataset`. Unset: split `val_size` "
                                       "off each training set.")
    dataset_dir: str | None = opt(None, "Folder holding a `dataset_info.json` whose names `dataset` may use; "
                                  "relative file names resolve against it.")
    dataset_info: str | None = opt(None, "An extra `dataset_info.json` (or YAML) registering more dataset "
                                   "names; relative file names resolve against its folder.")
    val_size: float = opt(0.0, "Share (0-1) or number (>=1) of rows split off each training set for "
                          "validation when no `val_dataset` is given.")
    max_samples: int | None = opt(None, "Keep at most this many rows of each dataset (seeded sample).")
    train_sample: int = opt(-1, "Sample this many rows from the whole mixed training set; -1 keeps all.")
    dataset_seed: int = opt(42, "Seed for sampling, mixing and splitting data (independent of `seed`).")
    format: str = opt("auto", "Row format of every file; `auto` detects it per file.",
                      choices=("auto", "alpaca", "sharegpt", "messages", "query_response", "text"))
    max_length: int = opt(2048, "Longest sequence in tokens; longer rows follow `truncation_strategy`. "
                          "-1: no limit.")
    truncation_strategy: str = opt("delete", "What to do with a row longer than `max_length`: `delete` drops "
                                   "it (counted in the report), `left` cuts its start, `right` its end.",
                                   choices=("delete", "left", "right"))
    check_dataset_strategy: str = opt("warning", "Bad rows: `error` stops before the model loads, `warning` "
                                      "drops and reports them, `none` drops them with only a count.",
                                      choices=("error", "warning", "none"))
    loss_scope: str = opt("all_turns", "Which tokens carry loss: every assistant reply (`all_turns`), only "
                          "the last one (`last_turn`), or the whole sequence including prompts (`all`).",
                          choices=("all_turns", "last_turn", "all"))
    model_name: tuple[str, ...] = opt((), "Name the tuned model calls itself: fills `{{name}}` in data rows. "
                                      "Two values: Chinese then English.")
    model_author: tuple[str, ...] = opt((), "Who made the tuned model: fills `{{author}}` in data rows. Two "
                                        "values: Chinese then English.")
    preprocessing_num_workers: int = opt(1, "Processes used to tokenize the data (the result is the same for "
                                         "any number).")
    data_cache: bool = opt(True, "Reuse the tokenized data of an earlier run with the same data files, "
                           "template, tokenizer and settings (kept under $HONE_HOME/cache/data).")
    max_bad_ratio: float = opt(0.5, "Stop before training when more than this share (0-1) of the rows is "
                               "dropped as bad; 1 never stops.")
    packing: bool = opt(True, "Lay each micro-batch's rows end to end in one sequence, attention kept within "
                        "each row and positions restarting per row: no compute on padding, the same rows per "
                        "step and the same loss as padding. `false`: pad every row to the micro-batch's longest. "
                        "Used for the model families hone's fast loss covers; others are padded.")
    max_forward_tokens: int = opt(0, "With packing, the most tokens one forward pass takes: a micro-batch "
                                  "longer than this runs as several forwards whose gradients add up to the same "
                                  "update, so activation memory stays bounded. A row longer than this runs alone. "
                                  "0: auto (1024 on a CPU, where longer forwards gain no speed; the whole "
                                  "micro-batch on a GPU).")


@dataclass(frozen=True)
class TuneCfg:
    tuning: str = opt("lora", "Tuning method: `lora`, `qlora` (4-bit base, CUDA only), `full`, or `freeze` "
                      "(train only the last layers).", choices=("lora", "qlora", "full", "freeze"))
    lora_rank: int = opt(8, "LoRA rank r.")
    lora_alpha: int = opt(32, "LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.")
    lora_target: tuple[str, ...] = opt(("DEFAULT",), "Modules that get LoRA: `DEFAULT`/`AUTO` (the model "
                                       "family's usual set), `ALL` (every linear layer but the output head), "
                                       "module names, or one regex.")
    modules_to_save: tuple[str, ...] = opt((), "Modules trained in full and saved beside the adapter "
                                           "(e.g. embed_tokens, lm_head).")
    use_rslora: bool = opt(False, "Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    use_dora: bool = opt(False, "Weight-decomposed LoRA (DoRA).")
    adapter: str | None = opt(None, "Start from this existing LoRA adapter directory.")
    freeze_trainable_layers: int = opt(2, "With `freeze`: how many of the last layers train (negative: the "
                                       "first layers).")
    freeze_ratio: float | None = opt(None, "With `full`/`freeze`: share (0-1) of the layers, from the bottom, "
                                     "kept frozen (ms-swift's `freeze_parameters`).")
    freeze_trainable_modules: tuple[str, ...] = opt((), "With `freeze`: extra module names trained in full.")
    neftune_alpha: float = opt(0.0, "NEFTune: scale of uniform noise added to input embeddings while "
                               "training; 0 turns it off.")


@dataclass(frozen=True)
class TrainCfg:
    output_dir: str = opt("output", "Where runs are written.")
    add_output_dir_suffix: bool = opt(True, "Write into `output_dir/<model>/v<N>-<timestamp>` so runs never "
                                      "overwrite each other.")
    overwrite_output_dir: bool = opt(False, "Let a new run replace the earlier run in its directory (its "
                                     "checkpoints, metrics and logs). Off: such a run stops and says how to "
                                     "resume it instead.")
    num_train_epochs: float = opt(1.0, "Passes over the training data (ignored when `max_steps` > 0).")
    max_steps: int = opt(-1, "Optimizer steps to train; -1 trains `num_train_epochs` epochs.")
    batch_size: int = opt(1, "Rows per device per forward pass.")
    eval_batch_size: int | None = opt(None, "Rows per device per evaluation pass; unset: `batch_size`.")
    gradient_accumulation_steps: int = opt(1, "Forward passes per optimizer step. The loss is normalised by "
                                           "the supervised tokens of the whole accumulated batch.")
    learning_rate: float | None = opt(None, "Peak learning rate; unset: 1e-4 for LoRA/QLoRA, 2e-5 for "
                                      "full/freeze.")
    lr_scheduler_type: str = opt("cosine", "Learning-rate schedule after warmup.",
                                 choices=("cosine", "linear", "constant", "constant_with_warmup",
                                          "cosine_with_min_lr"))
    min_lr_ratio: float = opt(0.1, "With `cosine_with_min_lr`: the final learning rate as a share of the peak.")
    warmup_ratio: float = opt(0.05, "Share of the steps spent warming the learning rate up from 0.")
    warmup_steps: int = opt(0, "Warmup steps; when > 0 it overrides `warmup_ratio`.")
    optim: str = opt("adamw_torch", "Optimizer (8-bit ones need CUDA and bitsandbytes).",
                     choices=("adamw_torch", "adamw_torch_fused", "adamw", "adam", "sgd", "adafactor",
                              "adamw_8bit", "paged_adamw_8bit"))
    weight_decay: float = opt(0.01, "Decoupled weight decay (not applied to biases and norms).")
    adam_beta1: float = opt(0.9, "Adam first-moment decay (beta1).")
    adam_beta2: float = opt(0.999, "Adam second-moment decay (beta2).")
    adam_epsilon: float = opt(1e-8, "Adam denominator epsilon (numerical stability).")
    max_grad_norm: float = opt(1.0, "Clip the gradient norm to this; 0 turns clipping off.")
    seed: int = opt(42, "Seed for weights init, dropout and data order (each process adds its rank).")
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass: less memory, "
                                       "about 30% slower.")
    eval_strategy: str = opt("steps", "When to evaluate on the validation split.", choices=("steps", "epoch", "no"))
    eval_steps: int = opt(50, "Evaluate every this many optimizer steps.")
    save_strategy: str = opt("steps", "When to save checkpoints.", choices=("steps", "epoch", "no"))
    save_steps: int | None = opt(None, "Save a checkpoint every this many steps; unset: `eval_steps`.")
    save_total_limit: int = opt(2, "Checkpoints kept (always the best and the last); -1 keeps all.")
    only_save_model: bool = opt(False, "Save weights only: smaller checkpoints that cannot resume exactly.")
    logging_steps: int = opt(5, "Log loss, learning rate, grad norm, speed and memory every this many steps.")
    logging_dir: str | None = opt(None, "TensorBoard folder; unset: `<run dir>/runs`.")
    report_to: tuple[str, ...] = opt(("tensorboard",), "Where metrics go besides the console and "
                                     "`metrics.jsonl`: `tensorboard`, `wandb`, `none` (each used only if "
                                     "installed).")
    plot_loss: bool = opt(True, "Write `loss.png` (train and eval loss) at the end of the run.")
    resume_from_checkpoint: str | None = opt(None, "Resume: a checkpoint directory, or `auto` for the latest "
                                             "complete one in the run directory.")
    resume_weights_only: bool = opt(False, "Resume from a checkpoint's weights alone (no optimizer, schedule "
                                    "or data position).")
    resume_ignore_changes: bool = opt(False, "Resume even though the data, batch size, accumulation, process "
                                      "count or max_steps changed since the checkpoint.")
    early_stopping_patience: int | None = opt(None, "Stop after this many evaluations without a better eval "
                                              "loss.")
    check_memory: bool = opt(True, "Estimate the memory the first step needs (weights, gradients and optimizer "
                             "state, activations at the longest forward, logits) before it runs, print it beside "
                             "the memory available, and stop with a suggestion when it will not fit.")
    max_nonfinite_steps: int = opt(1, "Stop the run after this many consecutive steps with a NaN or infinite "
                                   "loss or gradient.")
    dataloader_num_workers: int = opt(0, "Worker processes loading batches (data is pre-tokenized; 0 is "
                                      "usually fastest).")
    ddp_backend: str = opt("auto", "torch.distributed backend: `auto` picks nccl on CUDA, gloo on CPU.",
                           choices=("auto", "nccl", "gloo", "mpi", "ccl", "hccl"))
    ddp_timeout: int = opt(1800, "Seconds a process waits for the others before giving up.")
    deepspeed: str | None = opt(None, "DeepSpeed: `zero2`, `zero3`, `zero2_offload`, `zero3_offload`, or a "
                                "config JSON path (needs CUDA and the `deepspeed` extra).")
    nproc_per_node: int = opt(1, "Processes to launch on this machine (one per GPU; on CPU, gloo).")
    master_port: int | None = opt(None, "Port the processes launched by `nproc_per_node` meet on; unset: a free "
                                  "port. (With torchrun, pass its own --master_port instead.)")


@dataclass(frozen=True)
class GenCfg:
    max_new_tokens: int = opt(512, "Most tokens generated per reply.")
    do_sample: bool = opt(False, "Sample instead of greedy decoding.")
    temperature: float = opt(0.7, "Sampling temperature (with `do_sample`).")
    top_p: float = opt(0.9, "Nucleus sampling threshold (with `do_sample`).")
    top_k: int = opt(20, "Sample among the top k tokens (with `do_sample`); 0 turns it off.")
    repetition_penalty: float = opt(1.0, "Penalty > 1 discourages repeating tokens.")
    stop_words: tuple[str, ...] = opt((), "Extra strings that end a reply.")
    stream: bool = opt(True, "Stream tokens as they are generated in `hone chat`.")
    overwrite_generation_config: bool = opt(False, "Write these generation options into the checkpoint's "
                                            "`generation_config.json` (`hone infer`, `hone eval`).")
    infer_backend: str = opt("transformers", "Generation backend of `hone infer`, `hone eval` and `hone serve`: "
                             "`transformers` (any machine; `huggingface` and ms-swift's `pt` are the same) or `vllm` "
                             "(needs vLLM and a CUDA GPU).",
                             choices=("transformers", "huggingface", "vllm"))
    infer_batch_size: int = opt(8, "Prompts generated together by `hone infer` / `hone eval`.")
    vllm_maxlen: int = opt(4096, "With vLLM: longest prompt plus reply in tokens.")
    vllm_gpu_util: float = opt(0.9, "With vLLM: share (0-1) of GPU memory it may take.")
    vllm_enforce_eager: bool = opt(False, "With vLLM: no CUDA graphs (less memory, slower).")
    vllm_max_lora_rank: int = opt(32, "With vLLM: the largest LoRA rank an adapter may have.")


@dataclass(frozen=True)
class RunCfg:
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    tune: TuneCfg = field(default_factory=TuneCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    gen: GenCfg = field(default_factory=GenCfg)


SECTIONS: dict[str, type] = {"model": ModelCfg, "data": DataCfg, "tune": TuneCfg, "train": TrainCfg, "gen": GenCfg}


def _index() -> dict[str, tuple[str, dataclasses.Field]]:
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in out, f"config key {f.name} defined twice"
            out[f.name] = (section, f)
    return out


KEYS = _index()
_HINTS = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}


def key_help() -> list[tuple[str, str, Any, str]]:
    """(key, section, default, help) for every key: the source of the reference docs and `hone config keys`."""
    return [(k, s, f.default, f.metadata["help"]) for k, (s, f) in KEYS.items()]


def to_dict(cfg: RunCfg, *, redact: bool = True) -> dict[str, Any]:
    """Flat {key: value} of a config; secrets are replaced so dumps never carry them."""
    out: dict[str, Any] = {}
    for section in SECTIONS:
        sub = getattr(cfg, section)
        for f in dataclasses.fields(sub):
            v = getattr(sub, f.name)
            if f.metadata["secret"] and v is not None and redact:
                v = "***"
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def changed_keys(cfg: RunCfg) -> dict[str, Any]:
    """The keys whose values differ from the defaults (secrets redacted): what makes this run this run."""
    default = to_dict(RunCfg())
    return {k: v for k, v in to_dict(cfg).items() if v != default[k]}


def dump_yaml(cfg: RunCfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)

