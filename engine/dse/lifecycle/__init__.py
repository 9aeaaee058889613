"""Model lifecycle: `dse models pull`, `load`, `unload` and `ps`, with a GPU-fit check before every load."""

from .commands import KEEP_ALIVE, Change, Listing, Pulled, load, ps, pull, unload
from .fit import DoesNotFit, Fit
from .managed import adopt
from .progress import PullProgress

__all__ = ["KEEP_ALIVE", "Change", "DoesNotFit", "Fit", "Listing", "PullProgress", "Pulled", "adopt", "load", "ps", "pull", "unload"]
