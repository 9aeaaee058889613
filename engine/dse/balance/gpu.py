"""GPU headroom: how much memory is free on the GPU an endpoint runs on, and how busy it is.

Readings come from NVML (`pynvml`, from the `nvidia-ml-py` package), imported only when an
endpoint names a GPU. Everything that can be missing is: the package, the driver library, the
GPU itself (a container started without `--gpus`), a MIG-partitioned GPU, a driver that refuses
one call. Each of those gives an *unknown* reading with the reason, never an exception: an
unknown reading passes the headroom check, and `dse status` shows why it is unknown.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol
from urllib.parse import urlparse

from ..config.model import Endpoint

_MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuReading:
    """One look at one GPU; `unknown` holds the reason when nothing could be read."""

    device: str
    free_mb: float | None = None
    total_mb: float | None = None
    utilization: float | None = None
    unknown: str | None = None

    def describe(self) -> str:
        if self.unknown is not None:
            return f"GPU {self.device}: unknown ({self.unknown})"
        parts = []
        if self.free_mb is not None:
            parts.append(f"{self.free_mb:.0f} MiB free" + (f" of {self.total_mb:.0f}" if self.total_mb is not None else ""))
        if self.utilization is not None:
            parts.append(f"{self.utilization:.0f}% busy")
        return f"GPU {self.device}: {', '.join(parts) or 'no figures'}"


class GpuReader(Protocol):
    """Reads one GPU by NVML index or UUID; must not raise (an unknown reading says what went wrong)."""

    def read(self, gpu: int | str) -> GpuReading: ...


class NvmlReader:
    """GPU figures from NVML, initialised once per process on first use.

    An integer `gpu` is an NVML index, and NVML numbers GPUs in PCI bus order: the order
    `nvidia-smi` shows. CUDA's own numbering can differ (its default puts the fastest GPU first,
    and `CUDA_VISIBLE_DEVICES` renumbers what it exposes), so CUDA's index is never used here; a
    UUID (`GPU-...`, from `nvidia-smi -L`) names the same GPU whatever the order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._failure: str | None = None

    def read(self, gpu: int | str) -> GpuReading:
        device = str(gpu)
        nvml = self._library()
        if nvml is None:
            return GpuReading(device, unknown=self._failure)
        if isinstance(gpu, str) and gpu.startswith("MIG-"):
            return GpuReading(device, unknown="a MIG instance: NVML reports no utilization for one, so headroom is not checked")
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(gpu) if _is_uuid(gpu) else nvml.nvmlDeviceGetHandleByIndex(int(gpu))
            if _mig_enabled(nvml, handle):
                return GpuReading(device, unknown="MIG mode is on: the whole GPU's figures say nothing about one instance")
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            busy = nvml.nvmlDeviceGetUtilizationRates(handle)
        except nvml.NVMLError as exc:
            return GpuReading(device, unknown=f"NVML: {exc}")
        except ValueError:
            return GpuReading(device, unknown="not an NVML index or a GPU-... UUID")
        return GpuReading(device, memory.free / _MIB, memory.total / _MIB, float(busy.gpu))

    def _library(self) -> Any:
        """The initialised `pynvml` module, or None with `_failure` saying why (remembered: NVML will not appear later)."""
        with self._lock:
            if self._nvml is None and self._failure is None:
                try:
                    import pynvml
                except ImportError:
                    self._failure = "pynvml is not installed (pip install nvidia-ml-py)"
                    return None
                try:
                    pynvml.nvmlInit()
                except pynvml.NVMLError as exc:
                    self._failure = f"NVML unavailable: {exc} (no NVIDIA driver, or a container without GPU access)"
                    return None
                self._nvml = pynvml
            return self._nvml


@cache
def nvml_reader() -> NvmlReader:
    """One reader per process: NVML is initialised once, however many pools read it."""
    return NvmlReader()


def read_endpoint_gpu(endpoint: Endpoint, reader: GpuReader) -> GpuReading | None:
    """The reading for the GPU an endpoint names; None when it names none. Never raises, whatever the reader does."""
    if endpoint.gpu is None:
        return None
    device = str(endpoint.gpu)
    host = urlparse(endpoint.url).hostname or ""
    if not _is_this_machine(host):
        return GpuReading(device, unknown=f"{host} is another machine; NVML sees only this one's GPUs")
    try:
        return reader.read(endpoint.gpu)
    except Exception as exc:  # a reader is outside code: its bug must not take the balancer down
        return GpuReading(device, unknown=f"reading failed: {type(exc).__name__}: {exc}")


def _is_this_machine(host: str) -> bool:
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _is_uuid(gpu: int | str) -> bool:
    return isinstance(gpu, str) and gpu.startswith("GPU-")


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        return False
    return bool(current == nvml.NVML_DEVICE_MIG_ENABLE)
