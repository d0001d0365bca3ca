"""`hone` command line: subcommands → functions, `--key value` overrides → config. Nothing else lives here."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Sequence

from . import __version__
from .errors import HoneError

if TYPE_CHECKING:
    from .config import LoadedConfig

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


def _load(rest: Sequence[str], command: str, extra: dict[str, Any] | None = None) -> "LoadedConfig":
    """The config ``command`` reads (its sections only), and which keys the user gave; ``extra`` keys are
    set as if given on the command line."""
    from .config import load_with_given, parse_cli_overrides, sections_for

    path, tokens = _split_config(rest)
    overrides = {**parse_cli_overrides(tokens), **(extra or {})}
    return load_with_given(path, overrides, sections=sections_for(command))


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    cfg = _load(rest, "train").cfg
    if cfg.train.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        argv, secret = _strip_token(rest)
        if secret:  # the processes get it through the environment: an argv is visible to anyone running `ps`
            os.environ["HF_TOKEN"] = cfg.model.hub_token
        return _relaunch(cfg.train.nproc_per_node, ["train", *argv], cfg.train.master_port)
    setup_logging(os.environ.get("RANK", "0") == "0")
    from .runs import repeated_run
    from .training.loop import train

    result = train(cfg, repeat_of=repeated_run(_split_config(rest)[0]))
    print(f"run directory: {result.run_dir}")
    if result.best_checkpoint:
        print(f"best checkpoint: {result.best_checkpoint}")
    print(f"talk to it: hone chat --adapter {result.run_dir}")
    return 0


def _strip_token(tokens: Sequence[str]) -> tuple[list[str], bool]:
    """The command-line tokens without the hub token (any spelling, ``--key v`` or ``--key=v``); True if it
    was there."""
    from .config.aliases import ALIASES

    names = {"hub_token"} | {a for a, (target, _) in ALIASES.items() if target == "hub_token"}
    out, found, skipping = [], False, False
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2:
            skipping = tok[2:].split("=", 1)[0] in names
            found = found or skipping
            if skipping and "=" in tok:
                skipping = False
                continue
        if not skipping:
            out.append(tok)
    return out, found


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


def _cfg_and_run(rest: list[str], command: str) -> tuple[Any, Any, bool]:
    """(config, run or None, whether the user named a model) for chat / infer / eval."""
    from .runs import read_run, run_dir_of

    loaded = _load(rest, command)
    cfg = loaded.cfg
    adapter = cfg.tune.adapter
    return cfg, read_run(adapter) if adapter and run_dir_of(adapter) else None, "model" in loaded.given


def _need_run(cfg: Any, run: Any, what: str) -> None:
    """Refuse, before any model loads, a missing --adapter or one that is no run."""
    from .runs import read_run

    if run is None:
        if cfg.tune.adapter:
            read_run(cfg.tune.adapter)  # says in one sentence why it is not a run
        raise HoneError(f"{what} needs --adapter RUN_DIR (the directory `hone train` printed)")


def _engine(cfg: Any, model_given: bool, extra_adapters: Sequence[str] = ()) -> Any:
    """The engine for chat / infer / eval: with --adapter RUN alone, the run names the base model."""
    from .infer.engine import load_engine

    named = {}
    for spec in extra_adapters:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            raise HoneError(f"--load_adapter takes NAME=PATH, not {spec!r}")
        named[name] = where
    return load_engine(cfg, cfg.tune.adapter, model_given=model_given, adapters=named)


def cmd_chat(args: argparse.Namespace, rest: list[str]) -> int:
    from .infer.chat import answer_once, chat_loop

    cfg, _, model_given = _cfg_and_run(rest, "chat")
    engine = _engine(cfg, model_given, args.load_adapter or ())
    if args.prompt is not None:
        answer_once(engine, cfg.gen, args.prompt)
        return 0
    chat_loop(engine, cfg.gen)
    return 0


def cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from .serve.server import relaunch_without_key, serve

    relaunch_without_key(sys.argv[1:])  # a key typed on the command line moves to the environment
    return serve(args, rest, lambda tokens, extra: _load(tokens, "serve", extra).cfg)


def cmd_infer(args: argparse.Namespace, rest: list[str]) -> int:
    from .infer.batch import run_infer

    cfg, run, model_given = _cfg_and_run(rest, "infer")
    if not cfg.data.dataset:
        _need_run(cfg, run, "`hone infer` without --dataset")
    engine = _engine(cfg, model_given)
    res = run_infer(cfg, engine, run, dataset_given=bool(cfg.data.dataset), output=args.output, show=args.show)
    if cfg.gen.overwrite_generation_config:
        if run is None:
            log.warning("overwrite_generation_config: no run to write into (it needs --adapter RUN_DIR)")
        else:
            print(f"generation config: {engine.write_generation_config(run.weights_dir('final'), cfg.gen)}")
    return 0 if res.records else 1


def cmd_eval(args: argparse.Namespace, rest: list[str]) -> int:
    from .infer.report import run_eval

    cfg, run, model_given = _cfg_and_run(rest, "eval")
    _need_run(cfg, run, "`hone eval`")
    engine = _engine(cfg, model_given)
    run_eval(cfg, engine, run, dataset_given=bool(cfg.data.dataset), show=args.show)
    if cfg.gen.overwrite_generation_config:
        print(f"generation config: {engine.write_generation_config(run.weights_dir('final'), cfg.gen)}")
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
    from .config.aliases import IGNORED, aliases_of

    if args.action == "show":
        print(dump_yaml(_load(rest, "config").cfg), end="")
        return 0
    section = None
    for key, sec, default, help_ in key_help():
        if sec != section:
            section = sec
            print(f"\n[{sec}]")
        aliases = f"  (aliases: {', '.join(aliases_of(key))})" if aliases_of(key) else ""
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
    from .data import report as data_report

    cfg = _load(rest, "data").cfg
    if args.action == "check":
        print(data_report.check_report(cfg))
    else:
        print(data_report.preview(cfg, n=args.n, color=sys.stdout.isatty() and not args.no_color))
    return 0


def cmd_export(args: argparse.Namespace, rest: list[str]) -> int:
    from .export.cli import export

    if rest:
        raise HoneError(f"unknown export option(s): {' '.join(rest)}; see hone export --help")
    for path in export(args.path, out=args.out, which=args.weights, dtype=args.dtype, gguf_types=args.gguf,
                       force=args.force, overwrite=args.overwrite):
        print(path)
    return 0


# name: (function, one-line help, description)
COMMANDS: dict[str, tuple[Any, str, str]] = {
    "train": (cmd_train, "fine-tune a model", "hone train [CONFIG.yaml] [--key value ...]. " + KEYS_NOTE),
    "chat": (cmd_chat, "talk to a model (and a tuned adapter)",
             "hone chat [CONFIG.yaml] [--model M] [--adapter RUN_DIR] [--prompt TEXT]. Without --prompt: an "
             "interactive session (a line ending in \\ continues on the next; Ctrl-C stops the answer; /clear, "
             "/system TEXT, /save FILE, /adapter NAME, /exit). With --adapter and no model named, the base model and "
             "template come from the run. Training keys (a shared YAML) are accepted and not checked. " + KEYS_NOTE),
    "serve": (cmd_serve, "OpenAI-compatible server for a model and its adapters",
              "hone serve RUN_DIR | hone serve --model M [--adapter NAME=DIR ...] [--host H] [--port P] "
              "[--api-key KEY]. Serves /v1/models, /v1/chat/completions, /v1/completions, /health and a chat page "
              "at /; a request's `model` picks the base or an adapter by name. " + KEYS_NOTE),
    "infer": (cmd_infer, "predictions for a dataset (or a run's validation split), with metrics",
              "hone infer --adapter RUN_DIR [--dataset DATA] [--output FILE]: generate a reply for every row, write "
              "them as jsonl (prompt, reference, prediction, token counts), show a few, and where every row has a "
              "reference print BLEU-4 and ROUGE-1/2/L (LLaMA-Factory's method; needs the `metrics` extra). Without "
              "--dataset, the run's validation split. " + KEYS_NOTE),
    "eval": (cmd_eval, "did the fine-tune help? base vs tuned on the validation split",
             "hone eval --adapter RUN_DIR [--dataset DATA]: loss, perplexity and generation metrics of the base "
             "model and of the tuned one, and examples side by side; writes report.md and report.html into the run "
             "directory. " + KEYS_NOTE),
    "export": (cmd_export, "merge a run into a plain model directory; GGUF and Ollama Modelfile",
               "hone export RUN_DIR|CHECKPOINT [--gguf f16 ...]. Writes a Hugging Face directory (LoRA merged into "
               "the base, tokenizer with the chat template the run trained with) beside the weights: <run>/merged "
               "or checkpoint-N-merged. With --gguf, also model-TYPE.gguf files and an Ollama Modelfile inside it."),
    "models": (cmd_models, "list or pull models", "hone models list | hone models pull NAME"),
    "config": (cmd_config, "list config keys, or show a resolved config",
               "hone config keys | hone config show [CONFIG.yaml] [--key value ...]"),
    "templates": (cmd_templates, "list chat templates", "hone templates list"),
    "data": (cmd_data, "check or preview training data",
             "hone data check CONFIG | hone data preview CONFIG [-n 3]: statistics and bad rows, or samples rendered "
             "exactly as the model sees them with the tokens that carry loss marked. Tuning keys (a shared YAML) are "
             "accepted and not checked. " + KEYS_NOTE),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hone", description="Fine-tune chat LLMs on your own data.")
    p.add_argument("--version", action="version", version=f"hone {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    cmd = {}
    for name, (fn, short, description) in COMMANDS.items():
        cmd[name] = sub.add_parser(name, help=short, description=description)
        cmd[name].set_defaults(fn=fn)
    cmd["chat"].add_argument("--prompt", help="answer this one message and exit")
    cmd["chat"].add_argument("--load_adapter", action="append", metavar="NAME=PATH",
                             help="load another adapter (a run, checkpoint or adapter folder) under NAME; repeatable")
    from .serve.server import add_arguments

    add_arguments(cmd["serve"])
    cmd["infer"].add_argument("--output", help="predictions file (default: RUN_DIR/predictions.jsonl, or "
                              "./predictions.jsonl)")
    cmd["infer"].add_argument("--show", type=int, default=3, help="rows printed side by side")
    cmd["eval"].add_argument("--show", type=int, default=5, help="examples in the report")
    m = cmd["models"]
    m.add_argument("action", choices=("list", "pull"))
    m.add_argument("name", nargs="?")
    m.add_argument("--force", action="store_true", help="fetch and convert again even if cached")
    cmd["config"].add_argument("action", choices=("keys", "show"))
    cmd["templates"].add_argument("action", nargs="?", choices=("list",), default="list")
    d = cmd["data"]
    d.add_argument("action", choices=("check", "preview"))
    d.add_argument("-n", type=int, default=3, help="rows to preview")
    d.add_argument("--no-color", action="store_true", help="plain markers instead of colour")
    e = cmd["export"]
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


def entry() -> int:
    """The `hone` program (and `python -m hone`): `hone train` first starts itself again under jemalloc or
    tcmalloc when one is installed (``hone.allocator``), and on a CPU flushes subnormal floats to zero in
    every thread; called in-process, ``main`` does neither (``train`` flushes them on its own thread only)."""
    argv = sys.argv[1:]
    if argv[:1] == ["train"] and "-h" not in argv and "--help" not in argv:
        from . import allocator

        allocator.restart_with_better_allocator(argv)  # returns only when staying as it is
        import torch

        if not torch.cuda.is_available():  # before torch's thread pool starts, so that its threads inherit it
            torch.set_flush_denormal(True)  # (see hone.training.loop.flush_denormals)
    return main(argv)


if __name__ == "__main__":
    sys.exit(entry())
