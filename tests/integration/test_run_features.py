"""`dse run` features on the real embedded model: streaming output and a fan-out over both replicas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import CONFIG, run_dse

pytestmark = pytest.mark.integration


def test_streamed_step_shows_tokens_as_they_arrive(write, tmp_path: Path) -> None:
    workflow = write("stream.yaml", "name: s\nsteps:\n  - id: poem\n    stream: true\n    prompt: Write two short lines about the sea.\noutputs: {poem: '{{ steps.poem.output }}'}\n")
    result = run_dse("run", str(workflow), "--config", str(CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    poem = result.stdout.split("== poem ==", 1)[1].strip()
    assert poem
    streamed, finished = result.stderr.split("[ok] poem", 1)
    assert poem.split()[0] in streamed, "the text appeared on the terminal before the step finished"
    assert "tokens " in finished


def test_fan_out_spreads_over_both_replicas(write, tmp_path: Path) -> None:
    workflow = write(
        "fan.yaml",
        "name: fan\nsteps:\n  - id: name\n    for_each: [apple, pear, plum, fig, kiwi, lime]\n"
        "    prompt: 'Say the word {{ item }} and nothing else.'\noutputs: {names: '{{ steps.name.output | join(\", \") }}'}\n",
    )
    result = run_dse("run", str(workflow), "--config", str(CONFIG), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    served = document["calls_per_endpoint"]["local"]
    assert len(served) == 2 and all(n >= 1 for n in served.values()) and sum(served.values()) == 6
    step = document["steps"][0]
    assert len(step["output"]) == 6 and all(isinstance(o, str) and o for o in step["output"])
