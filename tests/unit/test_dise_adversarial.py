"""Regressions from an adversarial pass over DiSE configs: templates, config workflows, import report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dse.config import load_config
from dse.config.dise import format_to_jinja
from dse.config.dise_import import import_file
from dse.errors import InputError, Location
from dse.routing import Resolver
from dse.workflow import build_plan
from dse.workflow.from_config import config_workflow, is_config_workflow
from dse.workflow.templating import render

Write = Callable[[str, str], Path]
HERE = Location("config.yaml", 3, 7)
CONFIG = """\
llm:
  backend: o
  o: {type: ollama, base_url: "http://127.0.0.1:9", models: {writer: w}}
tools:
  t:
    llm: {model_key: writer, prompt_template: "{task} / {previous}"}
  plain:
    llm: {model_key: writer}
workflows:
"""


@pytest.mark.parametrize(
    "template",
    [
        "{{{task}}}",  # a literal brace on each side of a value
        "{{{task}",
        "x{{{task}",
        "a {{% endraw %}} b {task}",  # DiSE's way to write `{% endraw %}` as text
        "a {{%- endraw -%}} b {task} {{%endraw%}}{{",
        "{{{{% endraw %}}}}",
        "}}{task}{{ {{#x#}} {task}",
    ],
)
def test_a_dise_template_renders_as_python_would_format_it(template: str) -> None:
    assert render(format_to_jinja(template, HERE), {"task": "T"}) == template.format(task="T")


@pytest.mark.parametrize("field", ["none", "true", "False", "self", "range", "namespace"])
def test_a_field_jinja_reads_as_its_own_word_is_a_located_error(field: str) -> None:
    with pytest.raises(InputError) as caught:
        format_to_jinja(f"Review {{{field}}}", HERE)
    assert caught.value.location == HERE and f"{{{field}}}" in caught.value.message


def _config(write: Write, workflows: str) -> Path:
    return write("config.yaml", CONFIG + workflows)


def test_step_ids_with_hyphens_or_dict_method_names_pass_outputs_on(write: Write) -> None:
    path = _config(write, "  w:\n    steps:\n      - {step_id: my-step, tool: t}\n      - {step_id: items, tool: t}\n      - {step_id: b, tool: t}\n")
    config = load_config(path, {})
    workflow = config_workflow("w", config)
    build_plan(workflow, config, Resolver(config))  # `steps.my-step` was read as `steps.my - step`
    steps = {"my-step": {"output": "ONE"}, "items": {"output": "TWO"}}
    assert render(workflow.steps[1].with_["previous"], {"steps": steps}) == "ONE"
    assert render(workflow.steps[2].with_["previous"], {"steps": steps}) == "TWO"
    assert render(workflow.outputs["result"], {"steps": {"b": {"output": "END"}}}) == "END"


def test_a_description_holding_endraw_is_sent_as_written(write: Write) -> None:
    text = "x {% endraw %} {{ 7*7 }} {%"
    path = _config(write, f"  w:\n    steps:\n      - step_id: a\n        tool: plain\n        description: '{text}'\n")
    config = load_config(path, {})
    workflow = config_workflow("w", config)
    build_plan(workflow, config, Resolver(config))
    assert render(workflow.steps[0].with_["description"], {}) == text


def test_a_workflow_name_with_a_hash_is_found_by_name_and_by_config_form(write: Write) -> None:
    path = _config(write, '  "a#b":\n    steps:\n      - {step_id: a, tool: t}\n')
    config = load_config(path, {})
    for reference in ("a#b", f"{config.path}#a#b"):
        assert is_config_workflow(reference, config)
        assert config_workflow(reference, config).name == "a#b"


def test_an_unknown_name_in_config_form_is_a_located_error(write: Write) -> None:
    path = _config(write, "  w:\n    steps:\n      - {step_id: a, tool: t}\n")
    config = load_config(path, {})
    assert is_config_workflow(f"{config.path}#nope", config)
    with pytest.raises(InputError) as caught:
        config_workflow(f"{config.path}#nope", config)
    assert caught.value.location is not None and caught.value.location.line == 9 and "no workflow 'nope'" in caught.value.message


def test_a_directory_named_like_the_workflow_does_not_hide_it(write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(write, "  w:\n    steps:\n      - {step_id: a, tool: t}\n")
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path)
    assert is_config_workflow("w", load_config(path, {}))


def test_import_does_not_call_dses_own_sections_another_subsystem(write: Write) -> None:
    path = write(
        "dise.yaml",
        "llm:\n  model_roles: {base: m}\ntools:\n  t: {}\nworkflows:\n  w: {}\nembeddings:\n  backend: ollama\n",
    )
    reasons = {str(d.location.line): d.reason for d in import_file(path).dropped}
    assert all("dse reads DiSE's" in reasons[line] for line in ("3", "5", "7")), reasons
    assert "another DiSE subsystem" not in reasons["7"]


EMBED_BASE = "llm:\n  backend: box\n  box: {type: ollama, models: {generator: llama3}}\n"


@pytest.mark.parametrize(
    "section, key, message",
    [
        ("embeddings: {backend: nope}\n", "embeddings.backend", "unknown embedding backend 'nope'"),
        ("embeddings: {backend: '${NOPE_UNSET}'}\n", "embeddings.backend", "environment variable NOPE_UNSET is not set"),
        ("embeddings: {backend: openai, openai: {api_key: k, base_url: 'ftp://x'}}\n", "embeddings.openai.base_url", "http"),
        ("embeddings: {backend: box, box: {model: e, api_key: k2}}\n", "embeddings.box.api_key", "is not read: backend 'box' is declared under llm:"),
    ],
)
def test_embedding_section_mistakes_are_located(write: Write, section: str, key: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_config(write("config.yaml", EMBED_BASE + section), environ={})
    errors = getattr(info.value, "errors", [info.value])
    assert any(e.location is not None and e.location.key == key and message in e.message for e in errors), [str(e) for e in errors]
