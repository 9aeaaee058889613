"""`dse serve`: the config as an HTTP gateway, announced on stderr (and as JSON on stdout with --json)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import _state_dir


def _serve(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..serve import Listening, run

    config = load_config(args.config)
    host = args.host or config.serve.host
    port = config.serve.port if args.port is None else args.port

    def announce(listening: Listening) -> None:
        if args.json:
            print(json.dumps({"url": listening.url, "backends": list(listening.backends), "api_keys": listening.keys}), flush=True)
        access = "loopback only: no serve.api_keys" if listening.loopback_only else f"{listening.keys} API key(s) required"
        print(f"dse serve: listening on {listening.url} ({access}); backends: {', '.join(listening.backends)}", file=sys.stderr, flush=True)
        print(f"  OpenAI: {listening.url}/v1   Anthropic: {listening.url}   health: {listening.url}/health   Ctrl-C or SIGTERM drains and stops", file=sys.stderr, flush=True)

    run(config, host, port, _state_dir(args), announce)
    print("dse serve: stopped", file=sys.stderr)
    return 0
