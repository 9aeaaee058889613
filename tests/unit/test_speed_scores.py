"""Measured speeds in the selector: the tok/s scale, "no measurement -> catalog", and the measurement deciding a ranking."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dse.benchmark import FILE, Measurement, measured_speeds, save
from dse.cli import main
from dse.routing.catalog import MeasuredSpeed, lookup, speed_origin, speed_score
from dse.routing.selector import Candidate, Weights, rank

TWO_CANDIDATES = """\
llm:
  backend: a
  a: {type: ollama, base_url: 'http://127.0.0.1:9', models: {generator: llama3}}
  b: {type: ollama, base_url: 'http://127.0.0.1:9', models: {generator: mistral}}
model_selector:
  weights: {context_window: 0, speed: 100, cost: 0, quality: 0, specialization: 0}
"""
AUTO_STEP = "name: w\nsteps:\n  - id: ask\n    model: auto\n    prompt: Say hi.\n"
# The catalog rates mistral (6.5) a little faster than llama3 (6.0): a measurement must be able to say otherwise.
POOL = (Candidate("a", "ollama", "llama3"), Candidate("b", "ollama", "mistral"))
SPEED_ONLY = Weights(context_window=0, speed=100, cost=0, quality=0, specialization=0)


@pytest.mark.parametrize(
    ("tokens_per_second", "score"),
    [(0, 0), (5, 0), (10, 2), (20, 4), (40, 6), (80, 8), (160, 10), (5000, 10)],
)
def test_measured_tokens_per_second_map_onto_the_catalog_scale(tokens_per_second: float, score: float) -> None:
    assert speed_score(tokens_per_second) == pytest.approx(score)


@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6))
def test_a_faster_measurement_never_scores_lower(slower: float, faster: float) -> None:
    slower, faster = sorted((slower, faster))
    assert 0 <= speed_score(slower) <= speed_score(faster) <= 10


def test_published_speeds_land_where_the_catalog_rates_those_models() -> None:
    """The scale's anchors: a model measured at its usual speed keeps about its catalog score."""
    for model, backend_type, usual in (("gpt-4", "openai", 20), ("llama3", "ollama", 45), ("gpt-4o", "openai", 80)):
        assert abs(speed_score(usual) - lookup(model, backend_type).speed) <= 0.5, model


def test_without_a_measurement_the_speed_is_the_catalogs_and_says_so() -> None:
    info = lookup("llama3", "ollama")
    assert (info.speed, info.speed_source, info.measured) == (6.0, "catalog", None)
    assert speed_origin(info) == "catalog estimate"
    assert speed_origin(lookup("house-model-7b", "vllm")) == "estimated from the name"
    configured = lookup("llama3", "ollama", overrides={"llama3": {"speed": 2}})
    assert (configured.speed, speed_origin(configured)) == (2.0, "set in model_selector.models")


def test_a_measurement_is_the_speed_over_the_catalog_and_the_config() -> None:
    measured = MeasuredSpeed(41.2, time.mktime((2026, 11, 28, 12, 0, 0, 0, 0, -1)))
    info = lookup("llama3", "ollama", overrides={"llama3": {"speed": 2}}, measured=measured)
    assert info.speed == pytest.approx(speed_score(41.2)) and info.speed_source == "measured"
    assert speed_origin(info) == "measured 2026-11-28, 41.2 tok/s"
    assert info.quality == 6.0 and info.known, "only the speed comes from the measurement"


def test_a_measured_speed_flips_the_order_the_catalog_gives() -> None:
    by_catalog = rank(POOL, weights=SPEED_ONLY, top_k=None)
    assert [r.candidate.model for r in by_catalog] == ["mistral", "llama3"]
    measured = {("a", "llama3"): MeasuredSpeed(120.0, time.time()), ("b", "mistral"): MeasuredSpeed(12.0, time.time())}
    by_measurement = rank(POOL, weights=SPEED_ONLY, top_k=None, measured=measured)
    assert [r.candidate.model for r in by_measurement] == ["llama3", "mistral"]
    assert by_measurement[0].info.measured == measured[("a", "llama3")]


def test_a_measurement_belongs_to_its_backend_not_to_the_model_everywhere() -> None:
    pool = (Candidate("a", "ollama", "llama3"), Candidate("c", "ollama", "llama3"))
    ranked = rank(pool, weights=SPEED_ONLY, top_k=None, measured={("c", "llama3"): MeasuredSpeed(160.0, time.time())})
    assert [(r.candidate.backend, r.info.speed_source) for r in ranked] == [("c", "measured"), ("a", "catalog")]


def _measurement(backend: str, model: str, tps: float | None, at: float, error: str | None = None) -> Measurement:
    return Measurement(backend, model, at, 3, "http://127.0.0.1:9", 9, 0.1, tps, 300.0, 20, 32, None, error)


def test_the_newest_measurement_of_each_model_is_read_back_and_a_failure_is_not_kept(tmp_path: Path) -> None:
    assert measured_speeds(tmp_path) == {} and not (tmp_path / FILE).exists(), "reading creates nothing"
    save(tmp_path, [_measurement("a", "llama3", 30.0, 1000.0), _measurement("b", "mistral", 10.0, 1000.0)])
    save(tmp_path, [_measurement("a", "llama3", 90.0, 2000.0), _measurement("b", "mistral", None, 2000.0, error="HTTP 500")])
    assert measured_speeds(tmp_path) == {("a", "llama3"): MeasuredSpeed(90.0, 2000.0), ("b", "mistral"): MeasuredSpeed(10.0, 1000.0)}


@pytest.fixture
def benched(tmp_path: Path, write: Callable[[str, str], Path]) -> Callable[..., tuple[int, str]]:
    """`dse ARGS` with the two-candidate config and a state dir; the output and exit code."""
    config = write("config.yaml", TWO_CANDIDATES)
    workflow = write("auto.yaml", AUTO_STEP)

    def dse(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        code = main([a.format(config=config, workflow=workflow) for a in args] + ["--state-dir", str(tmp_path / "state")])
        return code, capsys.readouterr().out

    return dse


def test_select_and_plan_rank_with_what_bench_saved(benched, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, before = benched(capsys, "select", "say hi", "--config", "{config}", "--json")
    assert code == 0 and [r["model"] for r in json.loads(before)["ranked"]] == ["mistral", "llama3"]
    assert all(r["speed"]["source"] == "catalog" for r in json.loads(before)["ranked"])
    _, planned = benched(capsys, "plan", "{workflow}", "--config", "{config}", "--json")
    assert json.loads(planned)["steps"][0]["model"] == "mistral"

    save(tmp_path / "state", [_measurement("a", "llama3", 90.0, time.time())])
    code, after = benched(capsys, "select", "say hi", "--config", "{config}", "--json")
    ranked = json.loads(after)["ranked"]
    assert [r["model"] for r in ranked] == ["llama3", "mistral"]
    assert ranked[0]["speed"]["source"] == "measured" and ranked[0]["speed"]["tokens_per_second"] == 90.0
    assert ranked[0]["speed"]["score"] == pytest.approx(speed_score(90.0), abs=0.01)
    _, text = benched(capsys, "select", "say hi", "--config", "{config}")
    today = time.strftime("%Y-%m-%d")
    assert "1. a:llama3" in text and f"speed: measured {today}, 90.0 tok/s" in text and "speed: catalog estimate" in text
    _, planned = benched(capsys, "plan", "{workflow}", "--config", "{config}", "--json")
    step = json.loads(planned)["steps"][0]
    assert step["backend"] == "a" and any("speed: measured" in reason for reason in step["reasons"])
