"""Adding a backend type is one module: this test writes one, and the whole engine picks it up.

The module sits on the `dse.backends` package path (as a new file in `engine/dse/backends/`
would) and declares a `TYPES` tuple. Nothing else changes, yet the config validates with
`type: koboldcpp`, a directive names it, `dse status` gives its start hint and `dse run`
sends the step to its server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stubs import StubServer, openai_chat, refused_url

MODULE = '''
from dse.backends.openai_compat import OpenAICompatBackend
from dse.backends.registry import BackendType

TYPES = (
    BackendType(
        "koboldcpp",
        OpenAICompatBackend,
        "OpenAI-compatible (KoboldCpp)",
        local=True,
        default_url="http://localhost:5001/v1",
        sdk="openai",
        start_hint="start KoboldCpp with --port 5001",
        directive_words=(r"kobold(?:[ \\t]?cpp)?",),
    ),
)
'''


def dse_with_plugin(plugin: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys, dse.backends; dse.backends.__path__.append(sys.argv.pop(1)); "
        "from dse.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run([sys.executable, "-c", script, str(plugin), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_one_module_adds_a_backend_type_end_to_end(stub: StubServer, write, tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "koboldcpp.py").write_text(MODULE)
    stub.route("POST", "/v1/chat/completions", openai_chat("hello from kobold"))
    config = write(
        "config.yaml",
        "llm:\n  backend: box\n"
        f"  box: {{type: ollama, base_url: '{refused_url()}', models: {{generator: llama3}}}}\n"
        f"  kobold: {{type: koboldcpp, base_url: '{stub.url}/v1', models: {{generator: tiny}}}}\n"
        f"  spare: {{type: koboldcpp, base_url: '{refused_url()}'}}\n",
    )
    workflow = write("wf.yaml", "name: k\nsteps:\n  - id: a\n    prompt: 'Use kobold for this. Say hi.'\noutputs: {a: '{{ steps.a.output }}'}\n")

    ran = dse_with_plugin(plugin, "run", str(workflow), "--config", str(config), "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    document = json.loads(ran.stdout)
    assert document["outputs"] == {"a": "hello from kobold"}
    assert document["steps"][0]["backend"] == "kobold"
    assert stub.calls("POST", "/v1/chat/completions")[0].json["messages"][-1]["content"] == "Say hi."

    status = dse_with_plugin(plugin, "status", "--config", str(config), cwd=tmp_path)
    assert "spare (koboldcpp: OpenAI-compatible (KoboldCpp))" in status.stdout
    assert "hint: start KoboldCpp with --port 5001" in status.stdout

    without = subprocess.run(
        [sys.executable, "-m", "dse", "validate", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert without.returncode == 2 and "koboldcpp" in without.stderr, "without the module the type is unknown"
