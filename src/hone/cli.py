"""`hone` command line: subcommands → functions, `--key value` overrides → config. Nothing else lives here."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Any, Sequence

from . import __version__
from .errors import HoneError

log = logging.getLogger("hone")

KEYS_NOTE = ("Any config key can follow as --key value (a list takes several values; a bare --flag means true); "
             "option names of ms-swift, LLaMA-Factory and HF TrainingArguments work too. `hone config keys` "
             "lists them all.")


def setup_logging(main_process: bool = True) -> None:
    level = logging.INFO if main_process else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[hone] %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # peft (0.21) calls a transformers attribute that transformers 5 deprecates; the warning is not the user's.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars; hone shows its own progress
    except ImportError:
        pass


def _split_config(rest: Sequence[str]) -> tuple[str | None, list[str]]:
    """An optional leading YAML path, then --key value tokens."""
    rest = list(rest)
    if rest and not rest[0].startswith("--"):
        return rest[0], rest[1:]
    return None, rest


def _load(rest: Sequence[str], extra: dict[str, Any] | None = None) -> Any:
    from .config import load_config, parse_cli_overrides

    path, tokens = _split_config(rest)
    overrides = parse_cli_overrides(tokens)
    overrides.update(extra or {})
    return load_config(path, overrides)


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    cfg = _load(rest)
    if cfg.train.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        return _relaunch(cfg.train.nproc_per_node, ["train", *rest], cfg.train.master_port)
    setup_logging(os.environ.get("RANK", "0") == "0")
    from .training.loop import train

    result = train(cfg)
    print(f"run directory: {result.run_dir}")
    if result.best_checkpoint:
        print(f"best checkpoint: {result.best_checkpoint}")
    print(f"talk to it: hone chat --adapter {result.run_dir}")
    return 0


def _relaunch(nproc: int, argv: list[str], master_port: int | None = None) -> int:
    """Start `nproc` processes of this command on this machine through torch's launcher (accelerate joins them).

    Without a given port, `--standalone` picks a free one, so two runs on one machine never collide.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    log.info("launching %d processes", nproc)
    where = ["--master_port", str(master_port)] if master_port else ["--standalone"]
    try:
        torchrun(["--nproc_per_node", str(nproc), *where, "-m", "hone", *argv])
    except ChildFailedError as e:
        print(f"error: a training process failed ({len(e.failures)} of {nproc}); see its messages above",
              file=sys.stderr)
        return 1
    return 0


def cmd_chat(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import parse_cli_overrides
    from .infer.chat import answer_once, chat_loop
    from .infer.engine import TransformersEngine

    path, tokens = _split_config(rest)
    overrides = parse_cli_overrides(tokens)
    model_given = path is not None or any(k in overrides for k in ("model", "model_name_or_path", "model_type",
                                                                    "model_id_or_path"))
    cfg = _load(rest)
    engine = TransformersEngine.load(cfg.model, cfg.tune.adapter, model_given=model_given)
    if args.prompt is not None:
        answer_once(engine, cfg.gen, args.prompt)
        return 0
    chat_loop(engine, cfg.gen)
    return 0


def cmd_models(args: argparse.Namespace, rest: list[str]) -> int:
    from .models.gguf import cached_models, models_dir, pull_builtin
    from .models.load import resolve_model
    from .models.registry import MODELS

    if args.action == "pull":
        if not args.name:
            raise HoneError(f"name the model to pull: {', '.join(MODELS.names())}")
        path = pull_builtin(MODELS.get(args.name), force=args.force) if args.name in MODELS else resolve_model(args.name)
        print(path)
        return 0
    cached = {name: (p, ok) for name, p, ok in cached_models()}
    print("built-in models:")
    for name in MODELS:
        info = MODELS.get(name)
        state = "cached" if cached.get(name, (None, False))[1] else "not pulled"
        print(f"  {name:<16} {state:<11} {info.description}")
    others = [(n, p, ok) for n, (p, ok) in cached.items() if n not in MODELS]
    if others:
        print("other cached models:")
        for n, p, ok in others:
            print(f"  {n:<16} {'ok' if ok else 'incomplete'}  {p}")
    print(f"cache: {models_dir()}")
    return 0


def cmd_config(args: argparse.Namespace, rest: list[str]) -> int:
    from .config import dump_yaml, key_help
    from .config_aliases import ALIASES, IGNORED

    if args.action == "show":
        print(dump_yaml(_load(rest)), end="")
        return 0
    by_key: dict[str, list[str]] = {}
    for alias, (key, _) in ALIASES.items():
        by_key.setdefault(key, []).append(alias)
    section = None
    for key, sec, default, help_ in key_help():
        if sec != section:
            section = sec
            print(f"\n[{sec}]")
        aliases = f"  (aliases: {', '.join(sorted(by_key[key]))})" if key in by_key else ""
        default_s = list(default) if isinstance(default, tuple) else default
        print(f"  {key} = {default_s!r}{aliases}\n      {help_}")
    print("\n[accepted for compatibility, no effect]")
    for key, why in IGNORED.items():
        print(f"  {key}: {why}")
    return 0


def cmd_templates(args: argparse.Namespace, rest: list[str]) -> int:
    from .templates.base import TEMPLATES, _load_builtins

    _load_builtins()
    print("auto  (the tokenizer's own chat template; the default)")
    for name in TEMPLATES:
        print(name)
    return 0


def cmd_data(args: argparse.Namespace, rest: list[str]) -> int:
    from .data import inspect as data_inspect

    cfg = _load(rest)
    if args.action == "check":
        print(data_inspect.check_report(cfg))
    else:
        print(data_inspect.preview(cfg, n=args.n, color=sys.stdout.isatty() and not args.no_color))
    return 0


def cmd_export(args: argparse.Namespace, rest: list[str]) -> int:
    from .export.cli import export

    if rest:
        raise HoneError(f"unknown export option(s): {' '.join(rest)}; see hone export --help")
    for path in export(args.path, out=args.out, which=args.weights, dtype=args.dtype, gguf_types=args.gguf,
                       force=args.force, overwrite=args.overwrite):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hone", description="Fine-tune chat LLMs on your own data.")
    p.add_argument("--version", action="version", version=f"hone {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("train", help="fine-tune a model", description="hone train [CONFIG.yaml] [--key value ...]. "
                       + KEYS_NOTE)
    t.set_defaults(fn=cmd_train)
    c = sub.add_parser("chat", help="talk to a model (and a tuned adapter)",
                       description="hone chat [CONFIG.yaml] [--model M] [--adapter RUN_DIR] [--prompt TEXT]. "
                       "Without --prompt: an interactive session (/clear, /system TEXT, /exit). With --adapter "
                       "alone, the base model and template come from the run. " + KEYS_NOTE)
    c.add_argument("--prompt", help="answer this one message and exit")
    c.set_defaults(fn=cmd_chat)
    m = sub.add_parser("models", help="list or pull models", description="hone models list | hone models pull NAME")
    m.add_argument("action", choices=("list", "pull"))
    m.add_argument("name", nargs="?")
    m.add_argument("--force", action="store_true", help="fetch and convert again even if cached")
    m.set_defaults(fn=cmd_models)
    g = sub.add_parser("config", help="list config keys, or show a resolved config",
                       description="hone config keys | hone config show [CONFIG.yaml] [--key value ...]")
    g.add_argument("action", choices=("keys", "show"))
    g.set_defaults(fn=cmd_config)
    tp = sub.add_parser("templates", help="list chat templates", description="hone templates list")
    tp.add_argument("action", choices=("list",))
    tp.set_defaults(fn=cmd_templates)
    d = sub.add_parser("data", help="check or preview training data",
                       description="hone data check CONFIG | hone data preview CONFIG [-n 3]: statistics and bad "
                       "rows, or samples rendered exactly as the model sees them with the tokens that carry loss "
                       "marked. " + KEYS_NOTE)
    d.add_argument("action", choices=("check", "preview"))
    d.add_argument("-n", type=int, default=3, help="rows to preview")
    d.add_argument("--no-color", action="store_true", help="plain markers instead of colour")
    d.set_defaults(fn=cmd_data)
    e = sub.add_parser("export", help="merge a run into a plain model directory; GGUF and Ollama Modelfile",
                       description="hone export RUN_DIR|CHECKPOINT [--gguf f16 ...]. Writes a Hugging Face directory "
                       "(LoRA merged into the base, tokenizer with the chat template the run trained with) beside "
                       "the weights: <run>/merged or checkpoint-N-merged. With --gguf, also model-TYPE.gguf files "
                       "and an Ollama Modelfile inside it.")
    e.add_argument("path", help="a run directory or a checkpoint-N folder inside one")
    e.add_argument("--out", help="the merged directory (default: beside the weights)")
    e.add_argument("--weights", choices=("final", "best", "last"), default="final",
                   help="for a run directory: which weights (default final)")
    e.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="dtype of the saved weights (auto: the base model's)")
    e.add_argument("--gguf", nargs="*", choices=("f32", "f16", "q8_0"), metavar="TYPE",
                   help="also write GGUF files of these types (f32, f16, q8_0; bare --gguf: f16); the Modelfile "
                   "uses the first")
    e.add_argument("--force", action="store_true", help="merge even into a quantized (QLoRA) base")
    e.add_argument("--overwrite", action="store_true", help="replace an existing merged directory")
    e.set_defaults(fn=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 0 if not argv else 2
    setup_logging(os.environ.get("RANK", "0") == "0")
    try:
        return args.fn(args, rest)
    except HoneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
