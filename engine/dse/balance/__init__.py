"""Endpoint pools: which server of a backend takes the next call."""

from .pool import EndpointPool, EndpointState, Lease

__all__ = ["EndpointPool", "EndpointState", "Lease"]
