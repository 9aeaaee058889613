"""`dse serve`: the config's resolver, router, balancer and spend control behind the OpenAI and Anthropic HTTP APIs.

Nothing here is imported by `import dse`: the web stack is an optional extra
(`pip install 'dse[serve]'`), loaded only when the gateway runs.
"""

from __future__ import annotations

from .server import Listening, check_access, run

__all__ = ["Listening", "check_access", "run"]
