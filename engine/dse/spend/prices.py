"""What a call costs: a built-in table of vendor list prices, the config's `pricing:` over it, 0 on local servers.

A price that is not known stays unknown (None): a report says "price unknown" and a budget
refuses what it cannot price, rather than counting it as free.
"""

from __future__ import annotations

from ..backends.types import Usage
from ..config.model import BackendConfig, Config, Price
from ..routing.catalog import catalog_name, is_local

TAKEN = "2025-01-15"
"""When the built-in prices were read off the vendors' pricing pages (USD per million tokens)."""

BUILT_IN: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-35-turbo": Price(0.50, 1.50),
    "claude-3-5-sonnet-20241022": Price(3.00, 15.00, 0.30),
    "claude-3-opus-20240229": Price(15.00, 75.00, 1.50),
    "claude-3-sonnet-20240229": Price(3.00, 15.00, 0.30),
    "claude-3-haiku-20240307": Price(0.25, 1.25, 0.03),
}

FREE = Price(0.0, 0.0, 0.0)


def price_of(config: Config, backend: BackendConfig, model: str) -> Price | None:
    """The backend's `pricing:`, then the config's, then 0 for a local server, then the built-in table.

    The built-in table knows a model by the catalog's name for it, so `claude-3-haiku` and
    OpenRouter's `anthropic/claude-3-haiku` are priced as `claude-3-haiku-20240307`; a dated
    snapshot the table does not list (`gpt-4o-2024-05-13`) has no known price, since vendors
    price snapshots apart.
    """
    for table in (backend.pricing, config.pricing):
        if model in table:
            return table[model]
    if is_local(backend.type):
        return FREE
    return BUILT_IN.get(model) or BUILT_IN.get(catalog_name(model) or model.rsplit("/", 1)[-1])


def cost(price: Price | None, usage: Usage) -> float | None:
    """USD for `usage` (nothing for no tokens, whatever the price); input read from the vendor's prompt cache at its own price where it has one."""
    if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
        return 0.0
    if price is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return ((usage.prompt_tokens - cached) * price.input + cached * cached_price + usage.completion_tokens * price.output) / 1e6
