"""Shell completion: the parser gives commands and options; these completers give what only dse knows.

Workflow files and names, run ids, and the `--input` names of the workflow already on the
line. The shell runs `dse` itself with argcomplete's environment set; `main` hands over before
any command runs. A completer reads files and starts nothing, and says nothing when something
is wrong (a broken config must not break the user's shell): it offers fewer words instead.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")


def active() -> bool:
    """True when a shell asked for completions: only then is argcomplete imported."""
    return "_ARGCOMPLETE" in os.environ


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell and exit; returns only when no shell asked."""
    import argcomplete

    argcomplete.autocomplete(parser)


def shellcode(shell: str) -> str:
    """What the user's shell evaluates once (`eval "$(dse completion bash)"`) to complete `dse`."""
    from argcomplete.shell_integration import shellcode as code

    return code(["dse"], shell=shell)


def workflows(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """YAML files under here and in ./workflows, the config's `workflows:` names, and the packaged ones."""
    from . import defaults

    names = {str(p) for pattern in ("*.yaml", "*.yml", "workflows/*.yaml", "workflows/*.yml") for p in Path().glob(pattern)}
    names.update(p.stem for p in Path("workflows").glob("*.yaml"))
    names.update(defaults.workflow_names())
    config = _config(parsed_args)
    if config is not None:
        names.update(config.workflows)
    return sorted(n for n in names if n.startswith(prefix))


def runs(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """`last` and the recorded run ids, newest first."""
    from .workflow.journal import LAST, run_ids

    state = getattr(parsed_args, "state_dir", None) or Path(os.environ.get("DSE_STATE_DIR") or ".dse")
    return [i for i in (LAST, *run_ids(Path(state))) if i.startswith(prefix)]


def inputs(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """`NAME=` for each input the workflow on the line declares."""
    reference = getattr(parsed_args, "workflow", None)
    if not reference:
        return []
    config = _config(parsed_args)
    if config is None:
        return []
    try:
        from .workflow.from_config import named_workflow

        workflow = named_workflow(reference, config)
    except Exception:  # an unfinished command line is not an error worth a traceback in the shell
        return []
    return [f"{name}=" for name in workflow.inputs if f"{name}=".startswith(prefix)]


def _config(parsed_args: argparse.Namespace) -> Any:
    try:
        from .config import load_config

        return load_config(getattr(parsed_args, "config", None))
    except Exception:  # no config, or a broken one: complete without its names
        return None
