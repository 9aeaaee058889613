"""Endpoint pools: which server of a backend takes the next call."""

from .pool import EndpointPool, EndpointState

__all__ = ["EndpointPool", "EndpointState"]
