"""Endpoint pools: which server of a backend takes the next call, and which ones should not."""

from .capacity import capacity_of, default_capacity
from .directory import EndpointDirectory
from .factory import pool_for
from .gpu import GpuReader, GpuReading, NvmlReader
from .pool import EndpointPool, EndpointState, EndpointView, Lease
from .settings import BalancerSettings, balancer_settings

__all__ = [
    "BalancerSettings",
    "EndpointDirectory",
    "EndpointPool",
    "EndpointState",
    "EndpointView",
    "GpuReader",
    "GpuReading",
    "Lease",
    "NvmlReader",
    "balancer_settings",
    "capacity_of",
    "default_capacity",
    "pool_for",
]
