"""DiSE's `workflows:` section of a config, as the workflows dse runs: `dse run blog_workflow`.

A DiSE workflow is a list of steps, each calling a tool with a description of its part. They
run in order; each step gets the workflow's `task` input, its own description and the previous
step's output (empty for the first), as `with:` values its tool's prompt can use (`{task}`,
`{description}`, `{previous}`). A tool without a prompt is sent the description, the task and the previous
output as one message. The last step's output is the workflow's `result`.

Such a workflow lives at `CONFIG#NAME`, which is what journals record, so `--resume` finds it.

A bare name that is neither a file nor in the config's `workflows:` is `./workflows/NAME.yaml`
(where `dse init --workflows` copies them), else a workflow shipped in the package (`dse run
review` in any directory): `workflow_file` finds it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from .. import defaults
from ..config import Config, read_yaml
from ..errors import InputError, Location
from .model import InputSpec, Step, Workflow, load_workflow

SEPARATOR = "#"


def is_config_workflow(reference: str, config: Config) -> bool:
    """A name the config's `workflows:` defines (or its `CONFIG#NAME` form), and no file of that name."""
    if Path(reference).is_file():
        return False
    return _name(reference, config) in config.workflows or reference.startswith(f"{config.path}{SEPARATOR}")


def named_workflow(reference: str, config: Config) -> Workflow:
    """The workflow a reference names: one in the config's `workflows:`, a file, ./workflows/NAME.yaml, or a packaged one."""
    return config_workflow(reference, config) if is_config_workflow(reference, config) else load_workflow(workflow_file(reference, config))


def workflow_file(reference: str, config: Config) -> str:
    """The file a reference that is not a config workflow names: itself, `./workflows/NAME.yaml`, or the packaged one.

    Only a bare name (`review`: no directory, no `.yaml`) is looked up; a path that does not
    exist is left for the loader to report as a missing file.
    """
    path = Path(reference)
    if path.exists() or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", reference) or path.suffix in (".yaml", ".yml"):
        return reference
    local = Path("workflows") / f"{reference}.yaml"
    if local.is_file():
        return str(local)
    packaged = defaults.workflow_path(reference)
    if packaged is not None:
        return str(packaged)
    names = defaults.workflow_names()
    known = [*config.workflows, *(p.stem for p in Path("workflows").glob("*.yaml")), *names]
    close = difflib.get_close_matches(reference, known, n=1, cutoff=0.6)
    own = f"; in {config.path}: {', '.join(sorted(config.workflows))}" if config.workflows else ""
    raise InputError(
        f"no workflow {reference!r}: no such file, and none of that name in the config's workflows:, ./workflows/ or the package",
        hint=(f"did you mean {close[0]!r}? " if close else "") + f"packaged workflows: {', '.join(names)}{own}",
    )


def config_workflow(reference: str, config: Config) -> Workflow:
    name = _name(reference, config)
    source = read_yaml(Path(config.path))
    if name not in config.workflows:
        where = source.locate(("workflows",)) if config.workflows else Location(str(config.path))
        raise InputError(f"no workflow {name!r} in {config.path}", location=where, hint=f"workflows: {', '.join(sorted(config.workflows)) or 'none'}")
    raw: dict[str, Any] = dict(config.workflows[name])
    steps: list[Step] = []
    for index, item in enumerate(raw["steps"]):
        at = ("workflows", name, "steps", index)
        tool = config.tools.get(item["tool"])
        previous = steps[-1].id if steps else None
        given: dict[str, Any] = {
            "task": "{{ inputs.task }}",
            "description": _literal(item.get("description", "")),
            "previous": f"{{{{ {_output(previous)} }}}}" if previous else "",
        }
        steps.append(
            Step(
                id=item["step_id"],
                location=source.locate((*at, "step_id")),
                name=item.get("description"),
                needs=(previous,) if previous else (),
                tool=item["tool"],
                prompt=None if tool is not None and tool.prompt else _message(previous),
                backend=item.get("backend"),
                with_=given,
                key_locations={key: source.locate((*at, key)) for key in item},
            )
        )
    _unique(steps)
    return Workflow(
        name=name,
        path=f"{config.path}{SEPARATOR}{name}",
        source=source,
        steps=tuple(steps),
        inputs={"task": InputSpec("task", default="", description="what the workflow works on")},
        outputs={"result": f"{{{{ {_output(steps[-1].id)} }}}}"},
        description=raw.get("description") or raw.get("name"),
    )


def _name(reference: str, config: Config) -> str:
    """The workflow's name: the reference itself when the config has it (names may hold `#`), else after `CONFIG#`."""
    if reference in config.workflows:
        return reference
    prefix = f"{config.path}{SEPARATOR}"
    if reference.startswith(prefix):
        return reference[len(prefix):]
    names = [reference[i + 1 :] for i, c in enumerate(reference) if c == SEPARATOR and reference[i + 1 :] in config.workflows]
    return names[0] if names else reference.rsplit(SEPARATOR, 1)[-1]


def _output(step_id: str) -> str:
    """`steps['id'].output`: a subscript, since `steps.my-step` is a subtraction and `steps.items` a dict method."""
    return f"steps[{step_id!r}].output"


def _literal(text: str) -> str:
    """A description is sent as written, even if it holds template syntax (`{% endraw %}` included)."""
    if not text:
        return ""
    return '{{ "{%" }}'.join(f"{{% raw %}}{piece}{{% endraw %}}" if piece else "" for piece in text.split("{%"))


def _message(previous: str | None) -> str:
    earlier = "\n\nThe previous step's output:\n{{ previous }}" if previous else ""
    return "{{ description }}\n\n{{ task }}" + earlier


def _unique(steps: list[Step]) -> None:
    seen: dict[str, Location] = {}
    for step in steps:
        if step.id in seen:
            raise InputError(f"duplicate step_id {step.id!r} (first at line {seen[step.id].line})", location=step.location)
        seen[step.id] = step.location
