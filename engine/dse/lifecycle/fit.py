"""Will a model fit in GPU memory? The check `dse models load` makes before it loads anything.

Free memory comes from NVML for the GPUs of the machine a server runs on: the GPU an endpoint
names (`gpu:`), else every GPU this machine has when the server is on it. An Ollama server also
counts the memory its own idle models hold, because its scheduler unloads them to make room.
A model is taken to need its size on disk plus a margin for the context cache and compute
buffers that load beside the weights; the margin is an estimate, which is why `--force` exists.
A check that cannot read a figure says "unknown" and lets the load go ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..backends import LoadedModel
from ..balance.gpu import GpuReader, GpuReading, read_endpoint_gpu
from ..config.model import Endpoint
from ..errors import DseError

GIB = 1024**3
_MIB = 1024**2
_MARGIN = 0.10
_MIN_MARGIN = 256 * _MIB
_MAX_GPUS = 16


def needed(size: int) -> int:
    """Bytes a model of `size` bytes on disk takes once loaded, margin included."""
    return size + max(int(size * _MARGIN), _MIN_MARGIN)


def size_text(size: float) -> str:
    """GiB to one decimal, or MiB below one GiB: a 100 MiB model is not "0.1 GiB"."""
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size / _MIB:.0f} MiB"


@dataclass(frozen=True)
class Headroom:
    """The GPU figures of one server's machine; `unknown` says why there are none."""

    gpus: tuple[GpuReading, ...] = ()
    unknown: str | None = None
    held: tuple[LoadedModel, ...] = ()

    @property
    def free(self) -> int | None:
        """The most one GPU can give: its free memory plus what the server would unload for the model."""
        best = max((r.free_mb for r in self.gpus if r.free_mb is not None), default=None)
        return None if best is None else int(best * _MIB) + sum(m.size_vram or 0 for m in self.held)

    def describe(self) -> str:
        text = "; ".join(_gpu_text(r) for r in self.gpus)
        if self.held:
            names = ", ".join(m.name for m in self.held)
            text += f"; the server holds {size_text(sum(m.size_vram or 0 for m in self.held))} in {names}, which it unloads to make room"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "free": self.free,
            "gpus": [{"gpu": r.device, "free": _bytes(r.free_mb), "total": _bytes(r.total_mb)} for r in self.gpus],
            "held": {m.name: m.size_vram for m in self.held},
            "unknown": self.unknown,
        }


@dataclass(frozen=True)
class Fit:
    """The answer for one model on one server; `smaller` names configured models for its roles that would fit."""

    model: str
    size: int | None
    headroom: Headroom
    loaded: bool = False
    smaller: tuple[str, ...] = ()

    @property
    def need(self) -> int | None:
        return None if self.size is None else needed(self.size)

    @property
    def verdict(self) -> str:
        """`loaded`, `fits`, `does not fit`, or `unknown` (which lets the load go ahead)."""
        free = self.headroom.free
        if self.loaded:
            return "loaded"
        if self.need is None or free is None:
            return "unknown"
        return "fits" if self.need <= free else "does not fit"

    def describe(self) -> str:
        if self.loaded:
            return f"{self.model} is already loaded"
        if self.need is None or self.size is None:
            return f"GPU fit unknown: the size of {self.model} is not known (the server does not list it)"
        needs = f"model {self.model} needs {size_text(self.need)} ({size_text(self.size)} on disk + margin)"
        if self.headroom.free is None:
            return f"{needs}; GPU fit unknown: {self.headroom.unknown}"
        return f"{needs}; {self.headroom.describe()}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "model": self.model,
            "size": self.size,
            "need": self.need,
            "headroom": self.headroom.as_dict(),
            "smaller": list(self.smaller),
        }


class DoesNotFit(DseError):
    """A load refused before anything was loaded: the figures say the model will not fit (exit 1, not bad input)."""

    def __init__(self, fit: Fit) -> None:
        suggestion = f"a smaller configured model for its role: {', '.join(fit.smaller)}; " if fit.smaller else ""
        super().__init__(
            fit.describe(),
            hint=f"{suggestion}free memory with `dse models unload NAME`, or --force to load it anyway",
        )
        self.fit = fit


def headroom(endpoint: Endpoint, reader: GpuReader, held: Sequence[LoadedModel] = ()) -> Headroom:
    """The GPU figures for the machine `endpoint` runs on; never raises."""
    readings = _readings(endpoint, reader)
    known = tuple(r for r in readings if r.unknown is None and r.free_mb is not None)
    if not known:
        return Headroom(unknown=readings[0].unknown if readings else "no GPU")
    return Headroom(known, held=tuple(held))


def _readings(endpoint: Endpoint, reader: GpuReader) -> list[GpuReading]:
    """The GPU the endpoint names; else this machine's GPUs by NVML index, up to the first index that reads nothing."""
    if endpoint.gpu is not None:
        return [r for r in [read_endpoint_gpu(endpoint, reader)] if r is not None]
    readings: list[GpuReading] = []
    for index in range(_MAX_GPUS):
        reading = read_endpoint_gpu(replace(endpoint, gpu=index), reader)
        if reading is None or reading.unknown is not None:
            return readings or [r for r in [reading] if r is not None]
        readings.append(reading)
    return readings


def _gpu_text(reading: GpuReading) -> str:
    total = f" of {size_text(reading.total_mb * _MIB)}" if reading.total_mb is not None else ""
    return f"GPU {reading.device} has {size_text((reading.free_mb or 0) * _MIB)} free{total}"


def _bytes(mb: float | None) -> int | None:
    return None if mb is None else int(mb * _MIB)
