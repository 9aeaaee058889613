"""GPU headroom: injected readers for every case, a fake `pynvml` for NVML's failure modes, and the real one.

This machine may have no GPU: the real-NVML test then skips with NVML's own reason, which is
the honest answer; every decision the balancer makes from a reading is covered by the fakes.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from types import SimpleNamespace

import pytest

from dse.balance import BalancerSettings, EndpointPool, GpuReading, NvmlReader
from dse.balance.gpu import read_endpoint_gpu
from dse.backends import LoadedModel, ServerReport
from dse.config.model import Endpoint

A, B = "http://127.0.0.1:9001", "http://127.0.0.1:9002"


class Readings:
    """A GPU reader that answers from a table and records what it was asked."""

    def __init__(self, **by_gpu: GpuReading) -> None:
        self.by_gpu = by_gpu
        self.asked: list[int | str] = []

    def read(self, gpu: int | str) -> GpuReading:
        self.asked.append(gpu)
        return self.by_gpu[f"g{gpu}"]


class Raising:
    def read(self, gpu: int | str) -> GpuReading:
        raise RuntimeError("driver went away")


def gpu_pool(reader: object, probe: object = None, **settings: object) -> EndpointPool:
    p = EndpointPool(
        [Endpoint(A, gpu=0, max_concurrency=9), Endpoint(B, gpu=1, max_concurrency=9)],
        settings=BalancerSettings(**settings),  # type: ignore[arg-type]
        gpu=reader,  # type: ignore[arg-type]
        probe=probe,  # type: ignore[arg-type]
        rng=random.Random(3),
    )
    asyncio.run(p.refresh())
    return p


def spread(p: EndpointPool, model: str | None = None, count: int = 8) -> Counter[str]:
    async def calls() -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(count):
            lease = await p.lease(model=model)
            counts[lease.url] += 1
            lease.end(ok=True)
        return counts

    return asyncio.run(calls())


def test_too_little_free_memory_is_skipped_while_another_gpu_has_room() -> None:
    reader = Readings(g0=GpuReading("0", free_mb=500, total_mb=8000, utilization=5), g1=GpuReading("1", free_mb=6000, total_mb=8000, utilization=90))
    p = gpu_pool(reader, min_free_gpu_memory_mb=2048)
    assert spread(p) == {B: 8}
    assert p.states[0].reason == "skipped: GPU 0 has 500 MiB free, less than min_free_gpu_memory_mb (2048)"
    assert sorted(reader.asked) == [0, 1]


def test_a_busy_gpu_is_skipped() -> None:
    reader = Readings(g0=GpuReading("0", free_mb=6000, utilization=97), g1=GpuReading("1", free_mb=6000, utilization=20))
    p = gpu_pool(reader, max_gpu_utilization=80)
    assert spread(p) == {B: 8}
    assert p.states[0].reason == "skipped: GPU 0 is 97% busy, above max_gpu_utilization 80%"


def test_when_no_gpu_has_headroom_both_are_used_and_say_why() -> None:
    reader = Readings(g0=GpuReading("0", free_mb=100), g1=GpuReading("1", free_mb=200))
    p = gpu_pool(reader, min_free_gpu_memory_mb=1024)
    assert set(spread(p)) == {A, B}
    assert p.states[1].reason == "used although GPU 1 has 200 MiB free, less than min_free_gpu_memory_mb (1024) (no endpoint passes that check)"


def test_a_model_that_must_be_loaded_needs_its_size_free() -> None:
    gib = 1024**3
    reader = Readings(g0=GpuReading("0", free_mb=3000), g1=GpuReading("1", free_mb=3000))

    async def probe(endpoint: Endpoint) -> ServerReport:
        loaded = {"big": LoadedModel("big:latest", 4 * gib, 4 * gib)} if endpoint.url == B else {}
        return ServerReport(model_sizes={"big": 4 * gib}, loaded=loaded)

    p = gpu_pool(reader, probe)
    assert spread(p, model="big") == {B: 8}, "already loaded on B; A would first need 4096 MiB"
    assert p.states[0].reason == "skipped: GPU 0 has 3000 MiB free, less than the 4096 MiB that loading 'big' needs"
    spread(p, model="small", count=1)
    assert [s.reason for s in p.states] == ["eligible", "eligible"], "a model of unknown size needs only the configured floor"


@pytest.mark.parametrize(
    "reader",
    [Raising(), Readings(g0=GpuReading("0", unknown="NVML: Not Supported"), g1=GpuReading("1", unknown="NVML: Not Supported"))],
    ids=["reader-raises", "unknown"],
)
def test_an_unknown_reading_passes_the_check(reader: object) -> None:
    p = gpu_pool(reader, min_free_gpu_memory_mb=1024, max_gpu_utilization=50)
    assert set(spread(p)) == {A, B}
    assert all(s.reason == "eligible" for s in p.states)


def test_a_raising_reader_is_reported_not_raised() -> None:
    reading = read_endpoint_gpu(Endpoint(A, gpu=0), Raising())
    assert reading is not None and reading.unknown == "reading failed: RuntimeError: driver went away"


def test_nvml_sees_only_this_machine() -> None:
    reading = read_endpoint_gpu(Endpoint("http://gpu-box:11434", gpu=0), Readings())
    assert reading is not None and reading.unknown == "gpu-box is another machine; NVML sees only this one's GPUs"
    assert read_endpoint_gpu(Endpoint(A), Readings()) is None


# ---- NvmlReader against a fake `pynvml` ------------------------------------------------------


class NVMLError(Exception):
    pass


def fake_nvml(*, init_error: str | None = None, call_error: str | None = None, mig: bool = False) -> SimpleNamespace:
    calls: list[tuple[str, object]] = []

    def init() -> None:
        if init_error:
            raise NVMLError(init_error)

    def handle(kind: str):
        def get(key: object) -> str:
            calls.append((kind, key))
            return f"handle-{key}"

        return get

    def memory(handle: str) -> SimpleNamespace:
        if call_error:
            raise NVMLError(call_error)
        return SimpleNamespace(free=3 * 1024**3, total=8 * 1024**3, used=5 * 1024**3)

    return SimpleNamespace(
        NVMLError=NVMLError,
        NVML_DEVICE_MIG_ENABLE=1,
        nvmlInit=init,
        nvmlDeviceGetHandleByIndex=handle("index"),
        nvmlDeviceGetHandleByUUID=handle("uuid"),
        nvmlDeviceGetMigMode=lambda h: (1, 1) if mig else (0, 0),
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=42, memory=10),
        calls=calls,
    )


def test_nvml_reads_by_index_or_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    reader = NvmlReader()
    assert reader.read(1) == GpuReading("1", free_mb=3072, total_mb=8192, utilization=42)
    assert reader.read("GPU-5d1f").free_mb == 3072
    assert nvml.calls == [("index", 1), ("uuid", "GPU-5d1f")]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ({"init_error": "Driver Not Loaded"}, "NVML unavailable: Driver Not Loaded (no NVIDIA driver, or a container without GPU access)"),
        ({"call_error": "Unknown Error"}, "NVML: Unknown Error"),
        ({"mig": True}, "MIG mode is on: the whole GPU's figures say nothing about one instance"),
    ],
    ids=["no-driver", "call-fails", "mig"],
)
def test_nvml_failures_are_unknown_readings(monkeypatch: pytest.MonkeyPatch, kind: dict, expected: str) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(**kind))
    assert NvmlReader().read(0) == GpuReading("0", unknown=expected)


def test_without_pynvml_the_reading_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert NvmlReader().read(0).unknown == "pynvml is not installed (pip install nvidia-ml-py)"


def test_a_mig_instance_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    assert "MIG instance" in (NvmlReader().read("MIG-0b3a").unknown or "")


def test_the_real_nvml_agrees_with_itself_by_index_and_uuid() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVML on this machine: {exc}")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            pytest.skip("NVML finds no GPU")
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))
    finally:
        pynvml.nvmlShutdown()
    reader = NvmlReader()
    by_index, by_uuid = reader.read(0), reader.read(uuid if isinstance(uuid, str) else uuid.decode())
    if by_index.unknown:
        pytest.skip(f"GPU 0 gives no reading: {by_index.unknown}")
    assert by_index.total_mb == by_uuid.total_mb and by_index.total_mb and by_index.total_mb > 0
    assert by_index.free_mb is not None and 0 <= by_index.free_mb <= by_index.total_mb
    assert by_index.utilization is not None and 0 <= by_index.utilization <= 100


def test_a_pool_reads_the_real_gpu_and_skips_it_below_the_memory_floor() -> None:
    """On a machine with a GPU: the pool's own reading of GPU 0 decides, and says why, in MiB the GPU reports."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVML on this machine: {exc}")
    endpoints = [Endpoint(A, gpu=0), Endpoint(B, gpu="no-such-gpu")]
    impossible = BalancerSettings(min_free_gpu_memory_mb=10**9)
    p = EndpointPool(endpoints, settings=impossible, gpu=NvmlReader())
    asyncio.run(p.refresh())
    reading = p.monitor.current(endpoints[0])
    assert reading is not None and reading.gpu is not None and reading.gpu.free_mb is not None
    assert spread(p, count=4) == {B: 4}, "GPU 0 has less than 10^9 MiB free; the unknown GPU passes"
    assert p.states[0].reason.startswith(f"skipped: GPU 0 has {reading.gpu.free_mb:.0f} MiB free")
    roomy = EndpointPool(endpoints, settings=BalancerSettings(min_free_gpu_memory_mb=1), gpu=NvmlReader())
    asyncio.run(roomy.refresh())
    assert sum(spread(roomy, count=4).values()) == 4 and roomy.states[0].reason == "eligible"
