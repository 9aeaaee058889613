"""`dse models pull|load|unload|ps` against a stub that speaks Ollama's documented API, and the GPU-fit check.

The stub answers `/api/pull` with NDJSON progress lines, `/api/generate` with the load and
unload answers, `/api/tags` and `/api/ps` with sizes; GPU readings are injected, so the fit
check's decisions are tested whether or not this machine has a GPU.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from stubs import Reply, StubServer, ndjson, refused_url

from dse import lifecycle
from dse.balance import GpuReading
from dse.cli import main
from dse.config import load_config
from dse.lifecycle import managed
from dse.lifecycle.fit import GIB
from dse.lifecycle.subject import subject
from dse.errors import InputError

SCHEMA = json.loads((ROOT / "schemas" / "records.schema.json").read_text())
REGISTRY = Registry().with_resource(SCHEMA["$id"], Resource.from_contents(SCHEMA))
MIB = 1024 * 1024
LAYER = "sha256:6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"
LAYER_SIZE = 46_170_000 * 100  # 4.3 GiB, whole percents


def validate(document: Any, name: str) -> None:
    schema = {"$ref": f"{SCHEMA['$id']}#/$defs/documents/{name}"}
    errors = list(Draft202012Validator(schema, registry=REGISTRY).iter_errors(document))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


class Readings:
    """GPU 0 .. n-1 as given; any other index reads as absent, as NVML says of a GPU that is not there."""

    def __init__(self, *free_total_mib: tuple[float, float]) -> None:
        self.gpus = free_total_mib

    def read(self, gpu: int | str) -> GpuReading:
        index = int(gpu)
        if index >= len(self.gpus):
            return GpuReading(str(gpu), unknown="NVML: Invalid Argument")
        free, total = self.gpus[index]
        return GpuReading(str(gpu), free_mb=free, total_mb=total, utilization=0.0)


def pull_progress() -> list[dict[str, Any]]:
    """What `ollama pull` streams: a manifest, one layer in 5% steps, the digest check, success."""
    steps = [{"status": f"pulling {LAYER[7:19]}", "digest": LAYER, "total": LAYER_SIZE, "completed": LAYER_SIZE * p // 100} for p in range(0, 101, 5)]
    return [
        {"status": "pulling manifest"},
        *steps,
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]


def tags(**sizes: int) -> Reply:
    return Reply(json={"models": [{"name": name, "model": name, "size": size} for name, size in sizes.items()]})


def running(*models: tuple[str, int, int]) -> Reply:
    return Reply(json={"models": [
        {"name": n, "model": n, "size": size, "size_vram": vram, "expires_at": "2026-11-28T10:30:00.000000+01:00"} for n, size, vram in models
    ]})


def generated(done_reason: str) -> Callable[[Any], Reply]:
    return lambda received: Reply(json={"model": received.json["model"], "response": "", "done": True, "done_reason": done_reason})


@pytest.fixture
def ollama(stub: StubServer, write: Callable[[str, str], Path]) -> Path:
    """A config whose `gpu` backend is the stub; `small` lists smaller models for the same roles on it."""
    stub.route("GET", "/api/tags", tags(**{"qwen2.5-coder:14b": 9 * GIB, "tinyllama:latest": 600 * MIB, "llama3.2:1b": 1300 * MIB, "phi3:medium": 8 * GIB}))
    stub.route("GET", "/api/ps", running())
    stub.route("POST", "/api/generate", lambda r: generated("unload" if r.json.get("keep_alive") == 0 else "load")(r))
    return write(
        "config.yaml",
        "llm:\n  backend: gpu\n"
        f"  gpu: {{type: ollama, base_url: '{stub.url}', models: {{generator: 'qwen2.5-coder:14b', triage: tinyllama}}}}\n"
        f"  small: {{type: ollama, base_url: '{stub.url}', models: {{generator: 'llama3.2:1b'}}}}\n"
        f"  medium: {{type: ollama, base_url: '{stub.url}', models: {{generator: 'phi3:medium'}}}}\n"
        "  api: {type: openai, api_key: sk-not-used, models: {generator: gpt-4o}}\n",
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---- pull ---------------------------------------------------------------------------------------


def test_pull_sends_the_documented_body_and_shows_progress_a_line_per_status_and_per_tenth(
    stub: StubServer, ollama: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stub.route("POST", "/api/pull", ndjson(*pull_progress()))
    code, out, err = cli(capsys, "models", "pull", "qwen2.5-coder:14b", "--config", str(ollama), "--state-dir", str(tmp_path))
    assert code == 0, err
    assert [r.json for r in stub.calls("POST", "/api/pull")] == [{"model": "qwen2.5-coder:14b", "stream": True}]
    layer = f"pulling {LAYER[7:19]}"
    assert err.splitlines() == [
        f"pulling qwen2.5-coder:14b on {stub.url}",
        "pulling manifest",
        *(f"{layer}: {p}% of 4.3 GiB" for p in range(0, 101, 10)),
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert out.strip() == f"pulled qwen2.5-coder:14b (4.3 GiB) on gpu @ {stub.url}"


def test_pull_json_prints_one_document_and_no_progress(stub: StubServer, ollama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("POST", "/api/pull", ndjson(*pull_progress()))
    code, out, err = cli(capsys, "models", "pull", "tinyllama", "--config", str(ollama), "--json")
    assert code == 0 and err == ""
    document = json.loads(out)
    validate(document, "modelsPull")
    assert document == {"backend": "gpu", "model": "tinyllama", "endpoints": [stub.url], "size": LAYER_SIZE, "status": "success"}


@pytest.mark.parametrize(
    "reply", [ndjson(*pull_progress(), cut_after=6), ndjson(*pull_progress()[:6])], ids=["connection dropped", "ended without success"]
)
def test_an_interrupted_pull_is_a_clean_error(reply: Reply, stub: StubServer, ollama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("POST", "/api/pull", reply)
    code, out, err = cli(capsys, "models", "pull", "tinyllama", "--config", str(ollama))
    assert code == 1 and out == ""
    assert f"dse: error: the stream from {stub.url} broke off after 6 events, before the final one" in err
    assert "Traceback" not in err and "pulled" not in err


def test_a_pull_the_server_refuses_midway_says_the_server_s_reason(stub: StubServer, ollama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stub.route("POST", "/api/pull", ndjson({"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}))
    code, _, err = cli(capsys, "models", "pull", "no-such-model", "--config", str(ollama), "--backend", "gpu")
    assert code == 1
    assert "pull model manifest: file does not exist" in err and "Traceback" not in err


# ---- load, unload, ps ---------------------------------------------------------------------------


def test_load_sends_keep_alive_with_no_prompt_and_unload_sends_zero(stub: StubServer, ollama: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, out, err = cli(capsys, "models", "load", "tinyllama", "--config", str(ollama), "--state-dir", state)
    assert code == 0, err
    assert out.startswith(f"loaded tinyllama on gpu @ {stub.url}, kept for 30m")
    code, _, err = cli(capsys, "models", "load", "llama3.2:1b", "--keep-alive", "2h", "--config", str(ollama), "--state-dir", state)
    assert code == 0, err
    code, _, err = cli(capsys, "models", "load", "llama3.2:1b", "--keep-alive", "-1", "--config", str(ollama), "--state-dir", state)
    assert code == 0, err
    code, out, err = cli(capsys, "models", "unload", "tinyllama", "--config", str(ollama), "--state-dir", state, "--json")
    assert code == 0, err
    assert [r.json for r in stub.calls("POST", "/api/generate")] == [
        {"model": "tinyllama", "keep_alive": "30m", "stream": False},
        {"model": "llama3.2:1b", "keep_alive": "2h", "stream": False},
        {"model": "llama3.2:1b", "keep_alive": -1, "stream": False},
        {"model": "tinyllama", "keep_alive": 0, "stream": False},
    ]
    document = json.loads(out)
    validate(document, "modelsChange")
    assert document["servers"] == [{"endpoint": stub.url, "action": "unloaded", "pid": None, "fit": None}]


def test_load_json_carries_the_fit_check_that_let_it_through(stub: StubServer, ollama: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "models", "load", "tinyllama", "--config", str(ollama), "--state-dir", str(tmp_path), "--json")
    assert code == 0
    document = json.loads(out)
    validate(document, "modelsChange")
    fit = document["servers"][0]["fit"]
    assert fit["size"] == 600 * MIB and fit["verdict"] in ("fits", "unknown"), fit


def test_ps_lists_what_each_server_holds_and_names_a_server_it_cannot_ask(
    stub: StubServer, write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stub.route("GET", "/api/ps", running(("llama3:latest", 5 * GIB, 4 * GIB), ("tinyllama:latest", 700 * MIB, 700 * MIB)))
    down = refused_url()
    config = write("config.yaml", f"llm:\n  backend: a\n  a: {{type: ollama, base_url: '{stub.url}'}}\n  b: {{type: ollama, base_url: '{down}'}}\n")
    code, out, err = cli(capsys, "models", "ps", "--config", str(config), "--state-dir", str(tmp_path), "--json")
    assert code == 0, err
    document = json.loads(out)
    validate(document, "modelsPs")
    first = document["loaded"][0]
    assert (first["backend"], first["model"], first["endpoint"], first["size"], first["size_vram"]) == ("a", "llama3:latest", stub.url, 5 * GIB, 4 * GIB)
    assert first["expires_at"] == "2026-11-28T10:30:00.000000+01:00" and first["state"] == "loaded"
    assert [(p["backend"], p["endpoint"]) for p in document["problems"]] == [("b", down)]
    code, out, _ = cli(capsys, "models", "ps", "--config", str(config), "--state-dir", str(tmp_path), "--backend", "a")
    assert code == 0
    header, llama, tiny = out.splitlines()
    assert header.split() == ["backend", "model", "endpoint", "state", "size", "vram", "memory", "pid", "expires"]
    assert llama.split()[:7] == ["a", "llama3:latest", stub.url, "loaded", "5.0", "GiB", "4.0"] and "700 MiB" in tiny


def test_plain_dse_models_still_lists_models(ollama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "models", "--config", str(ollama), "--json")
    assert code == 0
    rows = json.loads(out)
    validate(rows, "models")
    assert {"backend": "gpu", "model": "tinyllama"}.items() <= next(r for r in rows if r["model"] == "tinyllama").items()


# ---- which backend ------------------------------------------------------------------------------


def test_the_backend_is_the_one_that_lists_the_model_else_a_prefix_or_option_else_the_default(ollama: Path) -> None:
    config = load_config(ollama)
    assert subject(config, "llama3.2:1b", None, "load").backend.name == "small"
    assert subject(config, "tinyllama:latest", None, "load").roles == ("triage",), "Ollama's :latest is the same model"
    assert subject(config, "medium:llama3", None, "load").backend.name == "medium"
    assert subject(config, "llama3", "small", "load").backend.name == "small"
    assert subject(config, "never-listed", None, "pull").backend.name == "gpu"


def test_a_backend_that_cannot_hold_models_is_bad_input(ollama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "models", "load", "gpt-4o", "--config", str(ollama))
    assert code == 2
    assert "backend api (type openai) does not load models on request" in err and "--backend gpu" in err
    with pytest.raises(InputError, match="no backend 'gpuu'") as caught:
        subject(load_config(ollama), "x", "gpuu", "load")
    assert caught.value.hint == "did you mean 'gpu'?"


def test_a_managed_backend_has_nothing_to_pull(write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = write("config.yaml", "llm:\n  backend: local\n  local: {type: llamacpp, managed: {model: smollm2}}\n")
    code, _, err = cli(capsys, "models", "pull", "smollm2", "--config", str(config))
    assert code == 2 and "managed llama.cpp backend: it runs a model file, there is nothing to pull" in err


# ---- GPU fit ------------------------------------------------------------------------------------


def load(config: Path, name: str, reader: object, tmp_path: Path, **options: Any) -> lifecycle.Change:
    return asyncio.run(lifecycle.load(load_config(config), name, state_dir=tmp_path, reader=reader, **options))  # type: ignore[arg-type]


def test_a_model_that_will_not_fit_is_refused_with_the_figures_and_a_smaller_model_for_its_role(
    stub: StubServer, ollama: Path, tmp_path: Path
) -> None:
    stub.route("GET", "/api/ps", running(("tinyllama:latest", 600 * MIB, 1 * GIB)))
    with pytest.raises(lifecycle.DoesNotFit) as refused:
        load(ollama, "qwen2.5-coder:14b", Readings((3.1 * 1024, 24 * 1024)), tmp_path)
    assert refused.value.exit_code == 1, "not bad input: the same command works on a machine with room"
    assert refused.value.message == (
        "model qwen2.5-coder:14b needs 9.9 GiB (9.0 GiB on disk + margin); GPU 0 has 3.1 GiB free of 24.0 GiB; "
        "the server holds 1.0 GiB in tinyllama:latest, which it unloads to make room"
    )
    assert refused.value.hint is not None
    assert refused.value.hint.startswith("a smaller configured model for its role: small:llama3.2:1b (1.3 GiB); ")
    assert "phi3" not in refused.value.hint, "8 GiB does not fit in 4.1 GiB either"
    assert stub.calls("POST", "/api/generate") == [], "nothing is loaded when the check refuses"


def test_the_best_gpu_decides_and_force_loads_what_the_check_refuses(stub: StubServer, ollama: Path, tmp_path: Path) -> None:
    roomy = load(ollama, "qwen2.5-coder:14b", Readings((1024, 24 * 1024), (20 * 1024, 24 * 1024)), tmp_path)
    fit = roomy.outcomes[0].fit
    assert fit is not None and fit.verdict == "fits" and "GPU 1 has 20.0 GiB free of 24.0 GiB" in fit.describe()
    forced = load(ollama, "qwen2.5-coder:14b", Readings((1024, 24 * 1024)), tmp_path, force=True)
    assert forced.outcomes[0].fit is not None and forced.outcomes[0].fit.verdict == "does not fit"
    assert len(stub.calls("POST", "/api/generate")) == 2


def test_memory_the_server_s_idle_models_hold_counts_as_room(stub: StubServer, ollama: Path, tmp_path: Path) -> None:
    """Ollama unloads idle models to make room: 3.1 GiB free and 7 GiB held is room for a 9.9 GiB need."""
    stub.route("GET", "/api/ps", running(("phi3:medium", 8 * GIB, 7 * GIB)))
    loaded = load(ollama, "qwen2.5-coder:14b", Readings((3.1 * 1024, 24 * 1024)), tmp_path)
    fit = loaded.outcomes[0].fit
    assert fit is not None and fit.verdict == "fits", fit.describe() if fit else None
    assert fit.describe().endswith("the server holds 7.0 GiB in phi3:medium, which it unloads to make room")


class Broken:
    def read(self, gpu: int | str) -> GpuReading:
        raise RuntimeError("driver went away")


@pytest.mark.parametrize("reader", [Readings(), Broken()], ids=["no GPU", "reader raises"])
def test_without_gpu_figures_the_check_says_unknown_and_loads(reader: object, stub: StubServer, ollama: Path, tmp_path: Path) -> None:
    loaded = load(ollama, "qwen2.5-coder:14b", reader, tmp_path)
    fit = loaded.outcomes[0].fit
    assert fit is not None and fit.verdict == "unknown"
    assert "GPU fit unknown: " in fit.describe()
    assert len(stub.calls("POST", "/api/generate")) == 1


def test_a_model_already_in_memory_is_not_checked_again(stub: StubServer, ollama: Path, tmp_path: Path) -> None:
    stub.route("GET", "/api/ps", running(("qwen2.5-coder:14b", 9 * GIB, 9 * GIB)))
    loaded = load(ollama, "qwen2.5-coder:14b", Readings((100, 24 * 1024)), tmp_path)
    assert loaded.outcomes[0].fit is not None and loaded.outcomes[0].fit.verdict == "loaded"


@pytest.fixture
def no_servers_left(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose recorded servers are stopped after the test, should a load the test expects refused go through."""
    yield tmp_path
    for record in managed.records(tmp_path):
        asyncio.run(managed.stop(tmp_path, record))


def test_a_managed_backend_is_refused_for_all_its_replicas_and_offered_an_ollama_model_of_the_same_role(
    stub: StubServer, write: Callable[[str, str], Path], no_servers_left: Path
) -> None:
    """Two replicas hold the GGUF file twice; a smaller model on another backend that fits is named."""
    from dse.local.assets import find_model

    stub.route("GET", "/api/tags", tags(**{"tinyllama:latest": 60 * MIB}))
    stub.route("GET", "/api/ps", running())
    config = write(
        "config.yaml",
        "llm:\n  backend: local\n"
        "  local: {type: llamacpp, managed: {model: smollm2, replicas: 2}, models: {generator: smollm2}}\n"
        f"  ollama: {{base_url: '{stub.url}', models: {{generator: tinyllama}}}}\n",
    )
    gguf = find_model("smollm2").stat().st_size
    with pytest.raises(lifecycle.DoesNotFit) as refused:
        load(config, "smollm2", Readings((400, 8 * 1024)), no_servers_left)
    assert f"({2 * gguf / MIB:.0f} MiB on disk + margin); GPU 0 has 400 MiB free of 8.0 GiB" in refused.value.message
    assert refused.value.hint is not None and "ollama:tinyllama (60 MiB)" in refused.value.hint
    assert not (no_servers_left / "managed").exists(), "no server was started, so none is recorded"
