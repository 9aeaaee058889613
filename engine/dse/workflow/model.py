"""Workflows as typed data: what a user wrote in `workflows/*.yaml`, validated and located."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .. import user_schema
from ..config import schema
from ..config.model import cache_settings
from ..config.yaml_source import YamlSource, read_yaml
from ..errors import InputError, Location


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str = "string"
    default: Any = None
    description: str | None = None
    required: bool = False
    pattern: str | None = None


@dataclass(frozen=True)
class Step:
    """One step. Exactly one of `tool`/`prompt` (a model call), `run` (a command) or `workflow`."""

    id: str
    location: Location
    name: str | None = None
    needs: tuple[str, ...] = ()
    tool: str | None = None
    prompt: str | None = None
    system: str | None = None
    run: tuple[str, ...] | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workflow: str | None = None
    with_: Mapping[str, Any] = field(default_factory=dict)
    when: str | None = None
    for_each: str | list[Any] | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    continue_on_error: bool = False
    output: str = "text"
    output_schema: Mapping[str, Any] | None = None
    backend: str | None = None
    model: str | None = None
    model_key: str | None = None
    select: Mapping[str, Any] | None = None
    task: str | None = None
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    cache: Mapping[str, Any] = field(default_factory=dict)
    key_locations: Mapping[str, Location] = field(default_factory=dict)

    def where(self, key: str) -> Location:
        """The position of one of this step's keys, so an error points at `prompt:`, not at `id:`."""
        return self.key_locations.get(key, self.location)

    @property
    def kind(self) -> str:
        if self.run is not None:
            return "run"
        if self.workflow is not None:
            return "workflow"
        return "llm"


@dataclass(frozen=True)
class Workflow:
    name: str
    path: str
    source: YamlSource
    steps: tuple[Step, ...]
    inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    description: str | None = None
    max_parallel: int | None = None

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)


_STEP_KEYS = {f for f in Step.__dataclass_fields__ if f not in {"id", "location", "with_", "key_locations"}}


def load_workflow(path: str | Path) -> Workflow:
    """Parse and schema-check a workflow file; graph checks happen in `dag.build_dag`."""
    source = read_yaml(Path(path))
    if not isinstance(source.data, dict):
        raise InputError("a workflow must be a YAML mapping with `name:` and `steps:`", location=Location(str(path), 1, 1))
    schema.validate(source, "workflow")
    data = source.data
    steps = []
    seen: dict[str, Location] = {}
    for index, raw in enumerate(data["steps"]):
        location = source.locate(("steps", index, "id"))
        if raw["id"] in seen:
            raise InputError(f"duplicate step id {raw['id']!r} (first at line {seen[raw['id']].line})", location=location)
        seen[raw["id"]] = location
        wrong = user_schema.problem(raw["output_schema"]) if raw.get("output_schema") is not None else None
        if wrong:
            raise InputError(wrong, location=source.locate(("steps", index, "output_schema")))
        values = {k: v for k, v in raw.items() if k in _STEP_KEYS}
        if "run" in values:
            values["run"] = tuple(str(a) for a in values["run"])
        if "cache" in values:
            values["cache"] = cache_settings(values["cache"])
        values["needs"] = tuple(values.get("needs", ()))
        keys = {key: source.locate(("steps", index, key)) for key in raw}
        steps.append(Step(id=raw["id"], location=location, with_=raw.get("with") or {}, key_locations=keys, **values))
    inputs = {
        name: InputSpec(name=name, **(spec or {})) for name, spec in (data.get("inputs") or {}).items()
    }
    for name, spec in inputs.items():
        if spec.pattern is not None:
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                raise InputError(f"input {name}: pattern is not a regular expression: {exc}", location=source.locate(("inputs", name, "pattern"))) from None
    return Workflow(
        name=data["name"],
        path=str(path),
        source=source,
        steps=tuple(steps),
        inputs=inputs,
        outputs=data.get("outputs") or {},
        env=tuple(data.get("env") or ()),
        description=data.get("description"),
        max_parallel=data.get("max_parallel"),
    )
