"""dse: a declarative orchestration engine for LLM work.

The public API is re-exported here lazily, so `import dse` (and `dse --help`) stays instant.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "dse.config",
    "Config": "dse.config",
    "load_workflow": "dse.workflow",
    "Workflow": "dse.workflow",
    "build_plan": "dse.workflow",
    "Plan": "dse.workflow",
    "Executor": "dse.workflow",
    "RunResult": "dse.workflow",
    "Resolver": "dse.routing",
    "Intent": "dse.routing",
    "Target": "dse.routing",
    "Router": "dse.routing",
    "Engine": "dse.engine",
    "prepare": "dse.runner",
    "run_workflow": "dse.runner",
    "ChatRequest": "dse.backends",
    "ChatResponse": "dse.backends",
    "Message": "dse.backends",
    "DseError": "dse.errors",
    "InputError": "dse.errors",
    "BackendError": "dse.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dse' has no attribute {name!r}")
