"""Where step bodies run: in this process, or on a Dask cluster (`dse run --cluster`).

A runner takes a rendered request and returns its outcome; the scheduler never learns which
runner it has. Adding one touches no scheduler code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from ..errors import InputError, SetupError
from .in_process import InProcessRunner

if TYPE_CHECKING:
    from ..workflow.steps import Outcome, StepRequest

INSTALL_CLUSTER = "pip install 'dse[cluster]'"
_ADDRESS = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://\S+|[\w.-]+:\d+")


class StepRunner(Protocol):
    async def run(self, request: StepRequest) -> Outcome: ...

    async def served(self) -> dict[str, dict[str, int]] | None:
        """Calls per endpoint made by other processes' routers (None: this process's router made them all)."""
        ...


def local_workers(spec: str) -> int | None:
    """N for `local:N`, None for a scheduler address."""
    return int(spec[6:]) if spec.startswith("local:") else None


def check_cluster(spec: str) -> None:
    """`local:N` (N ≥ 1) or a Dask scheduler address, and Dask installed: found before anything starts."""
    if spec.startswith("local:"):
        if not re.fullmatch(r"local:[1-9]\d{0,3}", spec):
            raise InputError(f"cluster {spec!r}: say local:N with N from 1 to 9999 worker processes, e.g. local:2")
    elif not _ADDRESS.fullmatch(spec) or not all(0 < int(port) < 65536 for port in re.findall(r":(\d+)/?$", spec)):
        raise InputError(
            f"cluster {spec!r} is neither local:N nor a Dask scheduler address",
            hint="e.g. local:2, or tcp://10.0.0.5:8786",
        )
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SetupError("running on a Dask cluster needs Dask distributed", hint=f"install it: {INSTALL_CLUSTER}") from None


__all__ = ["InProcessRunner", "StepRunner", "check_cluster"]
