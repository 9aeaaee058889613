"""Prices: which one a call is billed at, and what its tokens cost at it.

A price comes from the backend's `pricing:`, then the top-level `pricing:`, then 0 for a
local server, then the built-in table under any name the catalog knows the model by. A
model none of them knows has no price (None), which reports say as "price unknown".
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dse.backends.types import Usage
from dse.config import Config, load_config
from dse.config.model import Price
from dse.routing.catalog import known_models
from dse.spend.prices import BUILT_IN, FREE, TAKEN, cost, price_of

CONFIG = """
pricing:
  shared-model: {input: 2, output: 4}
  claude-3-haiku-20240307: {input: 9, output: 9}
  llama3: {input: 1, output: 1}
llm:
  backend: vendor
  vendor:
    type: anthropic
    api_key: k
    models: {generator: claude-3-haiku}
    pricing:
      shared-model: {input: 5, output: 6, cached_input: 1}
  other: {type: openai, api_key: k, models: {generator: gpt-4o}}
  router: {type: openrouter, api_key: k, models: {generator: anthropic/claude-3-haiku}}
  box: {type: ollama, models: {generator: qwen2.5-coder}}
  paid_box: {type: vllm, base_url: 'http://127.0.0.1:9/v1', models: {generator: m}, pricing: {m: {input: 0.5, output: 0.5}}}
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path: Path = tmp_path_factory.mktemp("prices") / "config.yaml"
    path.write_text(CONFIG)
    return load_config(path, environ={})


def priced(config: Config, backend: str, model: str) -> Price | None:
    block = config.find_backend(backend)
    assert block is not None
    return price_of(config, block, model)


@pytest.mark.parametrize(
    ("backend", "model", "expected"),
    [
        pytest.param("vendor", "shared-model", Price(5, 6, 1), id="the backend's pricing wins"),
        pytest.param("other", "shared-model", Price(2, 4), id="then the top-level pricing"),
        pytest.param("vendor", "claude-3-haiku-20240307", Price(9, 9), id="top-level pricing over the built-in table"),
        pytest.param("box", "qwen2.5-coder", FREE, id="a local server costs nothing"),
        pytest.param("box", "anything-at-all", FREE, id="whatever it serves"),
        pytest.param("box", "llama3", Price(1, 1), id="unless pricing names the model"),
        pytest.param("paid_box", "m", Price(0.5, 0.5), id="or the local backend has its own pricing"),
        pytest.param("other", "gpt-4o", BUILT_IN["gpt-4o"], id="then the built-in table"),
    ],
)
def test_where_a_price_comes_from(config: Config, backend: str, model: str, expected: Price) -> None:
    assert priced(config, backend, model) == expected


@pytest.mark.parametrize(
    ("model", "listed"),
    [
        ("claude-3-haiku", "claude-3-haiku-20240307"),
        ("anthropic/claude-3-haiku-20240307", "claude-3-haiku-20240307"),
        ("anthropic/claude-3-haiku", "claude-3-haiku-20240307"),
        ("Claude-3-Haiku", "claude-3-haiku-20240307"),
        ("claude-3.5-sonnet", "claude-3-5-sonnet-20241022"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4-turbo-preview", "gpt-4-turbo"),
    ],
)
def test_the_built_in_table_knows_a_model_by_any_catalog_name(config: Config, model: str, listed: str) -> None:
    assert priced(config, "router", model) == BUILT_IN[listed]


@pytest.mark.parametrize("model", ["claude-9-giant", "my-finetune", "gpt-4o-2024-05-13", "meta-llama/llama-3-70b-instruct"])
def test_a_model_nobody_prices_has_no_price_not_a_zero_one(config: Config, model: str) -> None:
    """A dated snapshot is priced by its vendor apart from its family, so it is not taken for it."""
    assert priced(config, "other", model) is None
    assert cost(None, Usage(10, 10)) is None


def test_the_table_prices_every_vendor_model_the_catalog_names_and_says_when_it_was_taken() -> None:
    vendor_models = {m for m in known_models() if m.startswith(("gpt-", "claude-"))}
    assert vendor_models and vendor_models <= set(BUILT_IN)
    assert datetime.date.fromisoformat(TAKEN) <= datetime.date.today()
    assert all(p.input > 0 and p.output >= p.input and (p.cached_input or 0) <= p.input for p in BUILT_IN.values())


@pytest.mark.parametrize(
    ("price", "usage", "usd"),
    [
        pytest.param(Price(3, 15, 0.3), Usage(1_000_000, 0), 3.0, id="input"),
        pytest.param(Price(3, 15, 0.3), Usage(0, 1_000_000), 15.0, id="output"),
        pytest.param(Price(3, 15, 0.3), Usage(1_000_000, 0, 400_000), 600_000 * 3e-6 + 400_000 * 0.3e-6, id="cached input at its price"),
        pytest.param(Price(3, 15), Usage(1_000_000, 0, 400_000), 3.0, id="no cached price: the input price"),
        pytest.param(Price(3, 15, 0.3), Usage(100, 0, 500), 100 * 0.3e-6, id="cached never above the prompt"),
        pytest.param(None, Usage(), 0.0, id="no tokens cost nothing, price or not"),
    ],
)
def test_cost(price: Price | None, usage: Usage, usd: float) -> None:
    assert cost(price, usage) == pytest.approx(usd)


money = st.floats(0, 100, allow_nan=False)
prices = st.builds(Price, money, money, st.none() | money)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    prompt = draw(st.integers(0, 10**7))
    return Usage(prompt, draw(st.integers(0, 10**7)), draw(st.integers(0, prompt)))


@given(price=prices, one=usages(), two=usages())
def test_cost_adds_up_over_calls(price: Price, one: Usage, two: Usage) -> None:
    """What a ledger sums row by row is what the calls would cost as one."""
    both = Usage(*(a + b for a, b in zip((one.prompt_tokens, one.completion_tokens, one.cached_tokens), (two.prompt_tokens, two.completion_tokens, two.cached_tokens))))
    parts = cost(price, one), cost(price, two)
    assert parts[0] is not None and parts[1] is not None
    assert cost(price, both) == pytest.approx(parts[0] + parts[1], rel=1e-9, abs=1e-12)


@given(price=prices, usage=usages(), more_prompt=st.integers(0, 10**6), more_output=st.integers(0, 10**6))
def test_more_tokens_never_cost_less(price: Price, usage: Usage, more_prompt: int, more_output: int) -> None:
    more = Usage(usage.prompt_tokens + more_prompt, usage.completion_tokens + more_output, usage.cached_tokens)
    before, after = cost(price, usage), cost(price, more)
    assert before is not None and after is not None and 0 <= before <= after
