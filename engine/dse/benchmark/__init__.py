"""`dse bench`: measure each backend's speed on a fixed prompt set, keep the figures, and feed them to the selector.

`results` keeps what was measured in `<state dir>/bench.db` and reads back the newest speed of
each (backend, model) for the resolver; `measure` runs the prompts through the engine's own
path (managed servers started and stopped, the router's stream), so the figures are what a
workflow step would see.
"""

from .measure import MAX_TOKENS, PROMPTS, BenchTarget, bench_targets, run_bench
from .results import FILE, Measurement, measured_speeds, save

__all__ = [
    "FILE",
    "MAX_TOKENS",
    "PROMPTS",
    "BenchTarget",
    "Measurement",
    "bench_targets",
    "measured_speeds",
    "run_bench",
    "save",
]
