"""Spend control (DESIGN section 10): the usage ledger, prices, budgets, rate limits, confirmation, the response cache."""

from .cache import CachedCaller, CacheStats, ResponseCache
from .control import CURRENT_STEP, Confirm, SpendControl, Ticket
from .ledger import UsageLedger
from .prices import price_of
from .session import SpendPlan, SpendSession, accounted

__all__ = [
    "CURRENT_STEP",
    "CacheStats",
    "CachedCaller",
    "Confirm",
    "ResponseCache",
    "SpendControl",
    "SpendPlan",
    "SpendSession",
    "Ticket",
    "UsageLedger",
    "accounted",
    "price_of",
]
