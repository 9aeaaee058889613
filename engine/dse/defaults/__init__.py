"""The embedded default config and the bundled workflows, shipped inside the package.

`config.yaml` here is what dse uses where no config of the user's own is found, and what
`dse init` writes; `workflows/*.yaml` run by name (`dse run review`). A source checkout's
`configs/config.yaml` and `workflows/*.yaml` are links to these files, so there is one copy.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def directory() -> Path:
    """Where the packaged files are: inside the installed package, or the source checkout's `engine/dse/defaults`."""
    return Path(str(resources.files(__name__)))


def config_path() -> Path:
    """The packaged default `config.yaml`."""
    return directory() / "config.yaml"


def workflow_names() -> list[str]:
    """The names of the packaged workflows, sorted: `review` for `workflows/review.yaml`."""
    return sorted(path.stem for path in (directory() / "workflows").glob("*.yaml"))


def workflow_path(name: str) -> Path | None:
    """The packaged workflow called `name`, or None when there is none."""
    return directory() / "workflows" / f"{name}.yaml" if name in workflow_names() else None
