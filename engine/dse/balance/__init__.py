"""Endpoint pools: which server of a backend takes the next call, and which ones should not."""

from .capacity import capacity_of, default_capacity
from .factory import pool_for
from .gpu import GpuReader, GpuReading, NvmlReader
from .pool import EndpointPool, EndpointState, Lease, QueueFull, QueueTimeout
from .settings import BalancerSettings, balancer_settings

__all__ = [
    "BalancerSettings",
    "EndpointPool",
    "EndpointState",
    "GpuReader",
    "GpuReading",
    "Lease",
    "NvmlReader",
    "QueueFull",
    "QueueTimeout",
    "balancer_settings",
    "capacity_of",
    "default_capacity",
    "pool_for",
]
