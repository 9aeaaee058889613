"""Resolution (which backend and model a step gets) and routing (how the call is sent)."""

from .resolver import Intent, Resolution, Resolver
from .router import Router
from .target import Target

__all__ = ["Intent", "Resolution", "Resolver", "Router", "Target"]
