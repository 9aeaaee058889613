"""How long a user waits before `dse` does anything: `dse --help` and `dse validate` vs bare Python.

The SDKs are imported lazily, so `--help` should cost little more than the interpreter itself.
Each command runs 10 times; the best time is kept. Printed as ratios, never asserted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 10


def best(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    python = best([sys.executable, "-c", "pass"])
    sdk = best([sys.executable, "-c", "import openai, anthropic"])
    help_ = best([sys.executable, "-m", "dse", "--help"])
    validate = best([sys.executable, "-m", "dse", "validate", "workflows/review.yaml"])
    print(f"startup: best of {RUNS}")
    print(f"  python -c pass          : {python * 1000:6.0f} ms")
    print(f"  import openai, anthropic: {sdk * 1000:6.0f} ms  ({sdk / python:.1f}x python)")
    print(f"  dse --help              : {help_ * 1000:6.0f} ms  ({help_ / python:.1f}x python)")
    print(f"  dse validate review.yaml: {validate * 1000:6.0f} ms  ({validate / python:.1f}x python)")


if __name__ == "__main__":
    main()
