"""``hone serve``: read the command line, load the base model and adapters by name, bind safely, run until a signal.

LLaMA-Factory's (``llamafactory-cli api``) and ms-swift's (``swift deploy``) option names are accepted.
``--infer_backend vllm`` serves with vLLM (CUDA) and its ``--vllm_*`` options; the options of backends hone does not
have (SGLang, LMDeploy) are read and noted, and hone serves with transformers.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import HoneError

log = logging.getLogger("hone")
KEY_ENV = "HONE_API_KEY"
_FOREIGN = ("--sglang_", "--sglang-", "--lmdeploy_", "--lmdeploy-")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--model_name_or_path", "--model_id_or_path", dest="serve_model",
                   metavar="M", help="base model (name, path or hub id)")
    p.add_argument("--adapter", "--adapters", "--adapter_name_or_path", "--lora_modules", dest="adapters",
                   action="append", default=[], metavar="NAME=DIR",
                   help="a LoRA adapter or run directory, served under NAME (repeatable; a comma list works too)")
    p.add_argument("--served_model_name", "--served-model-name", help="name of the base model in /v1/models")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    p.add_argument("--api-key", "--api_key", dest="api_key",
                   help=f"require 'Authorization: Bearer KEY' (or set {KEY_ENV})")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback host without an API key")
    p.add_argument("--max-queue", "--max_queue", dest="max_queue", type=int, default=64,
                   help="requests in flight at once before new ones get 429 (default 64)")
    p.add_argument("--max-body", "--max_body", dest="max_body", type=int, default=1 << 20,
                   help="largest request body in bytes (default 1 MiB)")


def split_foreign(rest: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate other servers' backend options (noted, no effect) from hone config keys."""
    keep, foreign, i = [], [], 0
    rest = list(rest)
    while i < len(rest):
        tok = rest[i]
        if tok.startswith(_FOREIGN):
            foreign.append(tok.split("=", 1)[0])
            i += 1
            if "=" not in tok and i < len(rest) and not rest[i].startswith("--"):
                i += 1
            continue
        keep.append(tok)
        i += 1
    return keep, foreign


def parse_adapters(values: Sequence[str]) -> list[tuple[str, str]]:
    """``NAME=DIR`` or a bare ``DIR`` (named by its folder); comma lists as LLaMA-Factory writes them."""
    out: list[tuple[str, str]] = []
    for v in values:
        for item in filter(None, (s.strip() for s in v.split(","))):
            name, sep, path = item.partition("=")
            if not sep:
                path, name = item, Path(item.rstrip("/")).name
            if not name or not path:
                raise HoneError(f"--adapter {item!r}: write NAME=DIR (or just DIR)")
            if any(n == name for n, _ in out):
                raise HoneError(f"two adapters are named {name!r}; give each its own with NAME=DIR")
            out.append((name, path))
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a busy port is an error before the model loads (never another port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise HoneError(f"cannot listen on {host}:{port} ({e.strerror or e}); is another server running there? "
                        "choose another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def scrub_key_argv(argv: Sequence[str]) -> list[str] | None:
    """argv without ``--api-key KEY`` (None when it has none), so the key can travel in the environment."""
    out, i, found = [], 0, False
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if tok in ("--api-key", "--api_key"):
            found, i = True, i + 2
            continue
        if tok.startswith(("--api-key=", "--api_key=")):
            found, i = True, i + 1
            continue
        out.append(tok)
        i += 1
    return out if found else None


def load_backend(args: argparse.Namespace, cfg: Any, model_given: bool) -> Any:
    """The base model with every adapter loaded unmerged, each by name."""
    from ..infer.engine import TransformersEngine
    from ..runs import read_run
    from .backend import Backend

    adapters = parse_adapters(args.adapters)
    mcfg = cfg.model
    aliases: list[str] = []
    if args.run_dir:
        run = read_run(args.run_dir)
        adapters.insert(0, (Path(args.run_dir.rstrip("/")).name, str(args.run_dir)))
        if not model_given:
            mcfg = run.model_settings(mcfg, model_given=False)
            aliases.append(run.model)
    # a run's base is named as the run names it (`smollm2-135m`), not by the cache folder it was loaded from
    base_name = args.served_model_name or (aliases[0] if aliases else mcfg.model)
    aliases += [mcfg.model, Path(mcfg.model).name]
    if any(name == base_name for name, _ in adapters):
        raise HoneError(f"the adapter name {base_name!r} is the base model's; choose another with NAME=DIR")
    log.info("loading %s", mcfg.model)
    if cfg.gen.infer_backend == "vllm":
        from ..infer.vllm_engine import VllmEngine

        engine: Any = VllmEngine.load(mcfg, cfg.gen, adapters=dict(adapters))
    else:
        engine = TransformersEngine.load(mcfg)
        for name, path in adapters:
            log.info("loading adapter %s from %s", name, path)
            engine.add_adapter(name, path)
    return Backend(engine, base_name, aliases)


def serve(args: argparse.Namespace, rest: Sequence[str], load_config: Any) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM; in-flight requests finish first."""
    try:
        import uvicorn

        from .app import Settings, create_app
    except ImportError as e:
        raise HoneError(f"hone serve needs {e.name}: pip install 'hone[serve]'") from None

    key = args.api_key or os.environ.get(KEY_ENV) or None
    if not is_loopback(args.host) and not key and not args.insecure:
        raise HoneError(f"--host {args.host} is reachable from other machines; set --api-key (or {KEY_ENV}), or "
                        "pass --insecure to serve without one")
    rest = list(rest)
    # RUN_DIR is read here, not by argparse, which would take the value of an unknown --key for it
    args.run_dir = rest.pop(0) if rest and not rest[0].startswith("-") else None
    tokens, foreign = split_foreign(rest)
    if foreign:
        log.info("%s: accepted for compatibility; hone serves with its own engine", ", ".join(sorted(set(foreign))))
    if args.serve_model is None and not args.run_dir:
        raise HoneError("name what to serve: hone serve RUN_DIR, or hone serve --model M [--adapter NAME=DIR]")
    overrides = {"model": args.serve_model} if args.serve_model else {}
    cfg = load_config(tokens, overrides)
    if cfg.gen.infer_backend == "vllm":  # a missing vLLM or GPU is said before the port is taken
        from ..infer.vllm_engine import check_available

        check_available()
    sock = bind(args.host, args.port)
    backend = load_backend(args, cfg, model_given=args.serve_model is not None)
    app = create_app(backend, Settings(api_key=key, max_queue=args.max_queue, max_body=args.max_body, gen=cfg.gen))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {', '.join(backend.names)} on http://{shown}:{port} (OpenAI API under /v1, chat page at /)",
          flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=60,
                            h11_max_incomplete_event_size=64 * 1024)
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then raises the signal again under the handlers it
    # found; these make that second delivery a no-op, so a drained server exits 0 instead of dying by signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run(sockets=[sock])
    print("stopped", flush=True)
    return 0


def relaunch_without_key(argv: Sequence[str]) -> None:
    """A key given on the command line moves to the environment and the process restarts without it, so it is
    not left readable in the process list."""
    scrubbed = scrub_key_argv(argv)
    if scrubbed is None or "serve" not in scrubbed:
        return
    ns = argparse.ArgumentParser(add_help=False)
    ns.add_argument("--api-key", "--api_key", dest="api_key")
    key = ns.parse_known_args(argv)[0].api_key
    env = dict(os.environ, **{KEY_ENV: key or ""})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "hone", *scrubbed], env)
