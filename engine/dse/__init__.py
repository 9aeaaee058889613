"""dse: a declarative orchestration engine for LLM work.

The public API is re-exported here. Errors are imported at once (they are tiny, and a caller
catches them); everything else loads on first use, so `import dse` and `dse --help` stay
instant. The `TYPE_CHECKING` block gives type checkers the real types of the lazy names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AuthError,
    BackendError,
    BackendLimitReached,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    DseError,
    InputError,
    InputErrors,
    Location,
    ModelNotFound,
    QueueFull,
    QueueTimeout,
    RateLimited,
    NotConfirmed,
    SetupError,
    SpendRefused,
)

if TYPE_CHECKING:
    from .backends import (
        Backend as Backend,
        BackendType as BackendType,
        ChatRequest as ChatRequest,
        ChatResponse as ChatResponse,
        EmbedResponse as EmbedResponse,
        Message as Message,
        StreamChunk as StreamChunk,
        Usage as Usage,
        backend_types as backend_types,
    )
    from .config import Config as Config, load_config as load_config
    from .engine import Engine as Engine
    from .routing import Intent as Intent, Resolver as Resolver, Router as Router, Target as Target
    from .runner import Prepared as Prepared, embed as embed, prepare as prepare, run_workflow as run_workflow
    from .runners import InProcessRunner as InProcessRunner, StepRunner as StepRunner
    from .spend import (
        CachedCaller as CachedCaller,
        ResponseCache as ResponseCache,
        SpendControl as SpendControl,
        UsageLedger as UsageLedger,
    )
    from .workflow import (
        Plan as Plan,
        RunResult as RunResult,
        Scheduler as Scheduler,
        Workflow as Workflow,
        build_plan as build_plan,
        load_workflow as load_workflow,
    )

__version__ = "0.1.0"

_LAZY = {
    "Backend": "dse.backends",
    "BackendType": "dse.backends",
    "ChatRequest": "dse.backends",
    "ChatResponse": "dse.backends",
    "EmbedResponse": "dse.backends",
    "Message": "dse.backends",
    "StreamChunk": "dse.backends",
    "Usage": "dse.backends",
    "backend_types": "dse.backends",
    "Config": "dse.config",
    "load_config": "dse.config",
    "Engine": "dse.engine",
    "Intent": "dse.routing",
    "Resolver": "dse.routing",
    "Router": "dse.routing",
    "Target": "dse.routing",
    "Prepared": "dse.runner",
    "embed": "dse.runner",
    "prepare": "dse.runner",
    "run_workflow": "dse.runner",
    "InProcessRunner": "dse.runners",
    "StepRunner": "dse.runners",
    "CachedCaller": "dse.spend",
    "ResponseCache": "dse.spend",
    "SpendControl": "dse.spend",
    "UsageLedger": "dse.spend",
    "Plan": "dse.workflow",
    "RunResult": "dse.workflow",
    "Scheduler": "dse.workflow",
    "Workflow": "dse.workflow",
    "build_plan": "dse.workflow",
    "load_workflow": "dse.workflow",
}

__all__ = [
    "AuthError",
    "BackendError",
    "BackendLimitReached",
    "BackendTimeout",
    "BackendUnavailable",
    "BadRequest",
    "ContextTooLong",
    "DseError",
    "InputError",
    "InputErrors",
    "Location",
    "ModelNotFound",
    "QueueFull",
    "QueueTimeout",
    "RateLimited",
    "SetupError",
    "NotConfirmed",
    "SpendRefused",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dse' has no attribute {name!r}")
