"""hone: fine-tune chat LLMs on your own data, from a laptop CPU to a multi-GPU cluster.

``import hone`` loads no heavy or optional package; each function imports what it needs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Collection

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import RunCfg
    from .training.loop import TrainResult


def load_config(source: Any = None, overrides: Any = None, *,
                sections: Collection[str] | None = None) -> "RunCfg":
    """A validated run config from a YAML path or dict plus ``--key value`` overrides (see hone.config);
    ``sections`` builds and checks only those (see ``hone.config.sections_for``)."""
    from .config import load_config as _load

    return _load(source, overrides, sections=sections)


def train(cfg: Any = None, **overrides: Any) -> "TrainResult":
    """Fine-tune: ``hone.train("run.yaml")``, ``hone.train({...})`` or ``hone.train(cfg, max_steps=10)``."""
    from .runs import repeated_run
    from .training.loop import train as _train

    return _train(_cfg(cfg, overrides, "train"), repeat_of=repeated_run(cfg))


def check_data(cfg: Any = None, **overrides: Any) -> str:
    """The `hone data check` report for a config (rows, tokens, lengths, loss share, dropped rows)."""
    from .data.report import check_report

    return check_report(_cfg(cfg, overrides, "data"))


def preview_data(cfg: Any = None, n: int = 3, **overrides: Any) -> str:
    """The `hone data preview` text: rows as the model sees them, tokens that carry loss in [[ ]]."""
    from .data.report import preview

    return preview(_cfg(cfg, overrides, "data"), n=n, color=False)


def _cfg(cfg: Any, overrides: dict[str, Any], command: str) -> "RunCfg":
    """A RunCfg as given (with overrides applied), or loaded with the sections ``command`` reads."""
    from .config import RunCfg, replace, sections_for

    if isinstance(cfg, RunCfg):
        return replace(cfg, **overrides) if overrides else cfg
    return load_config(cfg, overrides, sections=sections_for(command))


def register_template(name: str, template: Any, *, overwrite: bool = False) -> Any:
    from .templates import register_template as _reg

    return _reg(name, template, overwrite=overwrite)


def register_dataset(name: str, fn: Any = None, **kwargs: Any) -> Any:
    from .data.sources import register_dataset as _reg

    return _reg(name, fn, **kwargs)


def register_model(info: Any, *, overwrite: bool = False) -> Any:
    from .models.registry import register_model as _reg

    return _reg(info, overwrite=overwrite)


__all__ = ["__version__", "load_config", "train", "check_data", "preview_data", "register_template",
           "register_dataset", "register_model"]
