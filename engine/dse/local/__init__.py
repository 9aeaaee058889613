"""The embedded default: llama.cpp servers the engine starts, balances and stops itself."""

from .assets import find_llama_server, find_model
from .servers import LocalCluster, ManagedServer

__all__ = ["LocalCluster", "ManagedServer", "find_llama_server", "find_model"]
