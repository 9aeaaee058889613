"""Classes of bad input: each ends in a located exit 2 before anything runs, or runs exactly as written.

One section per class, in the order of the issue: files that exhaust the parser, server URLs,
output schemas, command-line counts and state directories, damaged journals, runs that die
of a bug, step fields, model names nobody owns, errors inside `anyOf` branches, and models
that come from a built-in table rather than the user's config.
"""

from __future__ import annotations

import asyncio
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from helpers import CONFIG

from dse import runner
from dse.cli import main
from dse.config import load_config
from dse.config.yaml_source import MAX_DEPTH, MAX_NODES, parse_yaml
from dse.engine import Engine
from dse.errors import BackendUnavailable, InputError, InputErrors
from dse.routing import Resolver
from dse.routing.resolver import Intent
from dse.workflow import Scheduler, build_plan, load_workflow
from dse.workflow.journal import list_runs, read_run


def errors_of(info: pytest.ExceptionInfo[InputError]) -> list[InputError]:
    error = info.value
    return list(error.errors) if isinstance(error, InputErrors) else [error]


def only_error(info: pytest.ExceptionInfo[InputError]) -> InputError:
    (error,) = errors_of(info)
    assert error.location is not None and error.location.line is not None, "every input error has a file:line"
    return error


# --- 1. small files that exhaust ---------------------------------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi")
)


def test_nested_brackets_are_refused_at_their_position_not_by_the_stack() -> None:
    text = "name: x\nsteps: " + "[" * 500 + "]" * 500 + "\n"
    with pytest.raises(InputError) as info:
        parse_yaml(text, "wf.yaml")
    error = only_error(info)
    assert error.location.line == 2 and f"deeper than {MAX_DEPTH} levels" in error.message


def test_nesting_up_to_the_limit_still_loads() -> None:
    depth = MAX_DEPTH - 1  # the top-level mapping is one level
    source = parse_yaml("x: " + "[" * depth + "]" * depth + "\n", "ok.yaml")
    assert isinstance(source.data["x"], list)


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    assert len(BOMB) < 500
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            parse_yaml(BOMB, "bomb.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    error = only_error(info)
    assert f"more than {MAX_NODES} values" in error.message and error.location.line == 6
    assert peak < 20 * 2**20, f"parsing a 400-byte file took {peak / 2**20:.0f} MiB"


def test_aliases_within_the_budget_still_load() -> None:
    source = parse_yaml("base: &b {model: m, max_tokens: 5}\none: *b\ntwo: {<<: *b, model: n}\n", "ok.yaml")
    assert source.data["two"] == {"model": "n", "max_tokens": 5} and source.data["one"] == source.data["base"]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(InputError) as info:
        parse_yaml("x: 1\nloop: &a [1, *a]\n", "loop.yaml")
    error = only_error(info)
    assert error.location.line == 2 and "inside its own anchor" in error.message


def test_aliases_that_stack_depth_are_refused() -> None:
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [*l{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
    with pytest.raises(InputError) as info:
        parse_yaml("\n".join(lines) + "\n", "deep.yaml")
    assert "deeper than" in only_error(info).message


def test_a_scalar_the_constructor_cannot_read_is_located(write) -> None:
    path = write("wf.yaml", f"name: x\nsteps:\n  - id: a\n    run: [echo, {'9' * 5000}]\n")
    with pytest.raises(InputError) as info:
        load_workflow(path)
    error = only_error(info)
    assert (error.location.line, error.location.column) == (4, 17) and "int" in error.message


def test_an_error_about_the_whole_document_points_at_its_first_line(write) -> None:
    path = write("wf.yaml", "# a comment\nsteps:\n  - id: a\n    run: [echo, hi]\n")
    with pytest.raises(InputError) as info:
        load_workflow(path)
    assert only_error(info).location.line == 2 and "missing required key 'name'" in str(info.value)


def test_a_name_with_a_line_break_stays_on_one_error_line(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  ollama: {models: {generator: llama3}}\ntools:\n  a: {backend: \"x\\ry\"}\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    assert len(str(info.value).splitlines()) == 1


def test_inputs_json_nested_past_the_stack_is_a_located_error(capsys, write) -> None:
    workflow = write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [echo, hi]\n")
    inputs = write("inputs.json", "[" * 100_000)
    assert main(["run", str(workflow), "--config", str(CONFIG), "--inputs", str(inputs)]) == 2
    assert capsys.readouterr().err.startswith(f"dse: error: {inputs}:1:1: invalid JSON: nested too deeply")


def test_a_missing_sub_workflow_is_located_at_the_step_that_names_it(write) -> None:
    with pytest.raises(InputError) as info:
        plan_of(write, "name: x\nsteps:\n  - id: a\n    run: [echo, hi]\n  - id: sub\n    workflow: nope.yaml\n")
    error = only_error(info)
    assert (error.location.line, error.location.key) == (6, "steps[1].workflow") and "nope.yaml" in error.message


# --- 2. server URLs --------------------------------------------------------------------------

BAD_URLS = [
    ("base_url", '"http://[::1/v1"', "cannot be parsed"),
    ("base_url", '"http://localhost:99999"', "port 99999 is outside 1-65535"),
    ("base_url", '"htp:/localhost"', "does not start with http://"),
    ("base_url", '"localhost:11434"', "does not start with http://"),
    ("base_url", '"file:///etc/passwd"', "scheme must be http or https"),
    ("base_url", '"http://"', "no host"),
    ("base_url", '""', "empty"),
]


@pytest.mark.parametrize(("key", "value", "problem"), BAD_URLS, ids=[v for _, v, _ in BAD_URLS])
def test_a_bad_base_url_fails_validation_at_its_key(write, key: str, value: str, problem: str) -> None:
    path = write("config.yaml", f"llm:\n  backend: ollama\n  ollama:\n    {key}: {value}\n    models: {{generator: llama3}}\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    error = only_error(info)
    assert (error.location.line, error.location.key) == (4, f"llm.ollama.{key}")
    assert problem in error.message


def test_an_empty_base_url_is_not_silently_the_default(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  ollama: {base_url: ''}\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    assert "write null" in (only_error(info).hint or "")


def test_every_url_of_a_block_is_checked_where_it_is_written(write) -> None:
    path = write(
        "config.yaml",
        "llm:\n  backend: ollama\n  ollama:\n    models: {generator: llama3}\n"
        "    endpoints:\n      overseer: [http://ok:1, 'htp:/x', {url: 'http://h:0'}]\n"
        "  azure:\n    endpoint: https://x.openai.azure.com\n    deployments:\n      a: {deployment: d, endpoint: 'http://h:70000'}\n"
        "  vllm:\n    endpoints: [{url: 'ftp://x'}]\n",
    )
    with pytest.raises(InputErrors) as info:
        load_config(path, environ={})
    keys = {e.location.key: e.location.line for e in errors_of(info) if e.location}
    assert keys == {
        "llm.ollama.endpoints.overseer[1]": 6,
        "llm.ollama.endpoints.overseer[2].url": 6,
        "llm.azure.deployments.a.endpoint": 10,
        "llm.vllm.endpoints[0].url": 12,
    }


def test_a_url_from_an_unset_variable_leaves_the_backend_unavailable_not_invalid(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  ollama: {base_url: '${NO_SUCH_URL}'}\n  vllm: {base_url: 'http://[::1]:8000/v1'}\n")
    config = load_config(path, environ={})
    assert config.backends["ollama"].unavailable == "NO_SUCH_URL is not set"
    assert config.backends["vllm"].base_url == "http://[::1]:8000/v1"


def test_a_url_error_never_quotes_the_url(write) -> None:
    path = write("config.yaml", "llm:\n  backend: ollama\n  ollama: {base_url: 'htp://user:hunter2secret@h'}\n")
    with pytest.raises(InputError) as info:
        load_config(path, environ={})
    assert "hunter2secret" not in str(info.value)


# --- 3. output_schema ------------------------------------------------------------------------


def test_an_invalid_output_schema_is_found_at_validate(write) -> None:
    path = write(
        "wf.yaml",
        "name: x\nsteps:\n  - id: a\n    run: [echo, '{}']\n    output: json\n    output_schema: {type: 12}\n"
        "  - id: b\n    run: [echo, '{}']\n    output: json\n    output_schema:\n      properties: {n: {type: strin}}\n",
    )
    with pytest.raises(InputErrors) as info:
        load_workflow(path)
    found = {(e.location.key, e.location.line): e.hint for e in errors_of(info) if e.location}
    assert ("steps[0].output_schema.type", 6) in found
    assert found[("steps[1].output_schema.properties.n.type", 11)] == "did you mean 'string'?"


def test_a_valid_output_schema_loads(write) -> None:
    path = write("wf.yaml", "name: x\nsteps:\n  - id: a\n    run: [echo, '{}']\n    output: json\n    output_schema: {type: object, required: [n]}\n")
    assert load_workflow(path).steps[0].output_schema == {"type": "object", "required": ["n"]}


# --- 4. command-line counts and the state directory ------------------------------------------


@pytest.mark.parametrize("value", ["-3", "0", "two"])
def test_max_parallel_below_one_is_refused_by_argparse(capsys, value: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "wf.yaml", "--max-parallel", value])
    assert info.value.code == 2
    assert "argument --max-parallel:" in capsys.readouterr().err


def test_run_workflow_refuses_max_parallel_below_one_from_python(tmp_path: Path, write) -> None:
    prepared = runner.prepare(write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [echo, hi]\n"), CONFIG)
    with pytest.raises(InputError, match="max_parallel must be 1 or more"):
        asyncio.run(runner.run_workflow(prepared, max_parallel=0, state_dir=tmp_path / "state"))
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("layout", ["file", "under-a-file", "runs-is-a-file"])
def test_a_state_dir_that_cannot_hold_journals_is_exit_2_before_anything_runs(capsys, tmp_path: Path, write, layout: str) -> None:
    workflow = write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [touch, ran]\n")
    blocker = write("state", "not a directory")
    state = {"file": blocker, "under-a-file": blocker / "sub", "runs-is-a-file": tmp_path / "st"}[layout]
    if layout == "runs-is-a-file":
        write("st/runs", "not a directory")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(["run", str(workflow), "--config", str(CONFIG), "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"dse: error: cannot keep run journals and logs in {state}:") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing ran, nothing was created"


def test_embed_checks_the_state_dir_before_starting_servers(capsys, write) -> None:
    blocker = write("state", "not a directory")
    assert main(["embed", "hello", "--config", str(CONFIG), "--state-dir", str(blocker)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_read_only_state_dir_is_exit_2(capsys, tmp_path: Path, write, monkeypatch) -> None:
    workflow = write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [echo, hi]\n")
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(runner.os, "access", lambda path, mode: False if Path(path) == tmp_path / "ro" else real_access(path, mode))
    code = main(["run", str(workflow), "--config", str(CONFIG), "--state-dir", str(tmp_path / "ro")])
    assert code == 2 and "is not writable" in capsys.readouterr().err
    assert list((tmp_path / "ro").iterdir()) == []


# --- 5. damaged journals ---------------------------------------------------------------------

META = {"id": "x", "workflow": "/w.yaml", "workflow_name": "good", "config": "/c.yaml", "inputs": {}}


def journal(state: Path, run_id: str, meta: object, events: str) -> Path:
    directory = state / "runs" / run_id
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    (directory / "events.jsonl").write_text(events)
    return directory


GOOD_EVENTS = '{"event": "run_started", "at": 1}\n{"event": "run_finished", "status": "done", "at": 3, "outputs": {"o": "a\u2028b"}}\n'


@pytest.mark.parametrize(
    ("meta", "events", "where"),
    [
        ('{"id": ', GOOD_EVENTS, "run.json:1:8"),
        (json.dumps([1, 2]), GOOD_EVENTS, "run.json:1"),
        ({**META, "inputs": "x"}, GOOD_EVENTS, "run.json:1"),
        (META, '{"event": "run_started", "at": 1}\n[1, 2]\n', "events.jsonl:2"),
        (META, '{"event": "run_started", "at": 1}\nnot json\n{"event": "run_finished", "status": "done", "at": 2}\n', "events.jsonl:2"),
        (META, '{"event": "step_finished", "at": 1, "id": "a"}\n', "events.jsonl:1"),
        (META, '{"event": "run_started", "at": "noon"}\n', "events.jsonl:1"),
    ],
    ids=["run.json-truncated", "run.json-a-list", "run.json-inputs-not-object", "event-a-list", "garbage-mid-file", "step-without-status", "time-not-a-number"],
)
def test_a_damaged_journal_is_listed_as_unreadable_and_shown_as_a_located_error(
    capsys, tmp_path: Path, meta: object, events: str, where: str
) -> None:
    journal(tmp_path, "20260101-000000-good", META, GOOD_EVENTS)
    bad = journal(tmp_path, "20260101-000001-bad0", meta, events)
    runs = {r.id: r for r in list_runs(tmp_path)}
    assert runs["20260101-000000-good"].status == "done"
    assert runs["20260101-000000-good"].outputs == {"o": "a\u2028b"}, "U+2028 inside a line is data, not a line break"
    unreadable = runs[bad.name]
    assert unreadable.status == "unreadable" and f"{bad}/{where}" in (unreadable.problem or "")
    assert main(["runs", "--state-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "unreadable" in listing and "done" in listing
    assert main(["show", bad.name, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dse: error: {bad}/{where}") and "damaged run journal" in err and "Traceback" not in err


def test_a_torn_last_line_is_still_ignored(tmp_path: Path) -> None:
    directory = journal(tmp_path, "20260101-000000-torn", META, '{"event": "run_started", "at": 1}\n{"event": "step_fin')
    assert read_run(directory).status == "killed", "no end event, and no process holds the journal's lock"


# --- 6. a run that dies of a bug -------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "exception", "status", "error"),
    [
        ("scheduler", RuntimeError("boom"), "failed", "internal error: RuntimeError: boom"),
        ("start", BackendUnavailable("server would not start"), "failed", "server would not start"),
        ("start", KeyboardInterrupt(), "interrupted", None),
    ],
    ids=["bug-in-a-step", "start-failed", "ctrl-c-while-starting"],
)
def test_whatever_ends_a_run_the_journal_says_so(
    tmp_path: Path, write, monkeypatch, where: str, exception: BaseException, status: str, error: str | None
) -> None:
    prepared = runner.prepare(write("wf.yaml", "name: w\nsteps:\n  - id: a\n    run: [echo, hi]\n"), CONFIG)

    async def explode(*args: object) -> None:
        raise exception

    monkeypatch.setattr(*((Scheduler, "run") if where == "scheduler" else (Engine, "start")), explode)
    with pytest.raises(type(exception)):
        asyncio.run(runner.run_workflow(prepared, state_dir=tmp_path / "state"))
    (record,) = list_runs(tmp_path / "state")
    assert record.status == status and record.outputs.get("error") == error


def test_a_resumption_that_has_not_ended_is_not_taken_for_the_earlier_end(tmp_path: Path) -> None:
    events = '{"event": "run_started", "at": 1}\n{"event": "run_finished", "status": "failed", "at": 2}\n{"event": "run_resumed", "at": 5}\n'
    record = read_run(journal(tmp_path, "20260101-000000-again", META, events))
    assert record.status == "killed" and not record.ended and record.finished is None


# --- 7. step fields --------------------------------------------------------------------------


def plan_of(write, workflow_text: str, config_path: Path | str = CONFIG):
    config = load_config(config_path, environ={})
    return build_plan(load_workflow(write("wf.yaml", workflow_text)), config, Resolver(config))


@pytest.mark.parametrize(
    ("template", "hint"),
    [
        ("run: [echo, '{{ steps.call.outptu }}']", "did you mean 'output'?"),
        ("run: [echo, \"{{ steps['call']['statuss'] }}\"]", "did you mean 'status'?"),
        ("when: steps.call.eror is none\n    run: [echo, x]", "did you mean 'error'?"),
        ("run: [echo, '{{ steps.call.tokens }}']", "a step has: output, status, error"),
    ],
)
def test_an_unknown_field_of_a_step_is_a_located_error(write, template: str, hint: str) -> None:
    with pytest.raises(InputError) as info:
        plan_of(write, f"name: x\nsteps:\n  - id: call\n    run: [echo, hi]\n  - id: b\n    {template}\n")
    error = only_error(info)
    assert error.location.line == 6 and "which a step does not have" in error.message and error.hint == hint


def test_the_fields_a_step_has_pass(write) -> None:
    text = "name: x\nsteps:\n  - id: call\n    run: [echo, hi]\n  - id: b\n    run: [echo, \"{{ steps.call.output }} {{ steps['call'].status }} {{ steps.call.error }}\"]\n"
    assert set(plan_of(write, text).steps) == {"call", "b"}


# --- 8. bare model names nobody owns ---------------------------------------------------------


def test_a_bare_model_name_nobody_owns_is_an_error_with_suggestions(write) -> None:
    with pytest.raises(InputErrors) as info:
        plan_of(write, "name: x\nsteps:\n  - id: a\n    prompt: hi\n    model: gpt-99-ultra\n  - id: b\n    prompt: hi\n    model: smollm3\n")
    first, second = errors_of(info)
    assert first.location and first.location.line == 3 and "no backend owns model 'gpt-99-ultra'" in first.message
    assert "openai" in first.message and "did you mean 'gpt-4-turbo'" in (first.hint or "")
    assert second.location and second.location.line == 6 and (second.hint or "").startswith("did you mean 'smollm2'")


@pytest.mark.parametrize(
    ("step", "where"),
    [
        ("backend: local\n    model: my-own-finetune", ("local", "my-own-finetune")),
        ("model: local:my-own-finetune", ("local", "my-own-finetune")),
        ("model: smollm2", ("local", "smollm2")),
        ("model: llama3", ("local", "llama3")),
    ],
    ids=["step-names-its-backend", "provider-prefixed", "a-managed-model", "in-the-catalog"],
)
def test_a_model_whose_owner_is_known_or_named_runs_as_written(write, step: str, where: tuple[str, str]) -> None:
    plan = plan_of(write, f"name: x\nsteps:\n  - id: a\n    prompt: hi\n    {step}\n")
    target = plan.steps["a"].resolution.target
    assert (target.backend, target.model) == where


def test_a_vendor_model_goes_to_the_default_backend_of_its_vendor_and_selector_models_count(write) -> None:
    config = write(
        "config.yaml",
        "llm:\n  backend: openai\n  ollama: {models: {generator: llama3}}\n  openai: {api_key: sk-x, models: {generator: gpt-4o}}\n"
        "model_selector:\n  models: {house-model: {speed: 5}}\n",
    )
    plan = plan_of(write, "name: x\nsteps:\n  - id: a\n    prompt: hi\n    model: gpt-99-ultra\n  - id: b\n    prompt: hi\n    model: house-model\n", config)
    assert (plan.steps["a"].resolution.target.backend, plan.steps["a"].resolution.target.model) == ("openai", "gpt-99-ultra")
    assert plan.steps["b"].resolution.target.model == "house-model"


def test_a_managed_model_file_is_owned_by_its_backend(write) -> None:
    config = write("config.yaml", "llm:\n  backend: openai\n  openai: {api_key: sk-x}\n  mine: {type: llamacpp, managed: {model: /models/custom.gguf}}\n")
    plan = plan_of(write, "name: x\nsteps:\n  - id: a\n    prompt: hi\n    model: /models/custom.gguf\n", config)
    assert plan.steps["a"].resolution.target.backend == "mine"


# --- 9. errors inside anyOf branches ---------------------------------------------------------


def test_errors_inside_endpoint_items_are_named_at_the_item_key(write) -> None:
    path = write(
        "config.yaml",
        "llm:\n  backend: x\n  x:\n    type: ollama\n    endpoints:\n      - http://a:1\n      - {url: 'http://b:1', wieght: 2}\n"
        "      - {url: 'http://c:1', max_concurrency: 0}\n      - 42\n  y:\n    type: ollama\n    endpoints:\n      overseer: [{url: 'http://d:1', wieght: 2}]\n",
    )
    with pytest.raises(InputErrors) as info:
        load_config(path, environ={})
    found = {e.location.key: (e.location.line, e.message, e.hint) for e in errors_of(info) if e.location}
    assert found["llm.x.endpoints[1].wieght"][:2] == (7, "unknown key 'wieght'")
    assert found["llm.x.endpoints[1].wieght"][2] == "did you mean 'weight'?"
    assert found["llm.x.endpoints[2].max_concurrency"][:2] == (8, "0 is out of range (minimum 1)")
    assert found["llm.x.endpoints[3]"][:2] == (9, "expected string or object, got int 42")
    assert found["llm.y.endpoints.overseer[0].wieght"][0] == 13
    assert len(found) == 4


@pytest.mark.parametrize(
    ("value", "message", "hint"),
    [("hihg", "'hihg' is not allowed here", "did you mean 'high'?"), ("11", "11 is out of range (maximum 10)", None)],
)
def test_a_one_of_value_is_explained_by_the_branch_of_its_type(write, value: str, message: str, hint: str | None) -> None:
    path = write("wf.yaml", f"name: x\nsteps:\n  - id: a\n    prompt: hi\n    select: {{max_cost: {value}}}\n")
    with pytest.raises(InputError) as info:
        load_workflow(path)
    error = only_error(info)
    assert (error.location.key, error.message) == ("steps[0].select.max_cost", message)
    if hint:
        assert error.hint == hint


# --- 10. nothing made up ---------------------------------------------------------------------

UNDECLARED_OLLAMA = "llm:\n  global_defaults:\n    default_backend: ollama\n  # ollama:\n  #   models: {generator: llama3}\n"
UNDECLARED_OPENAI = "llm:\n  global_defaults:\n    default_backend: openai\n  openai_key_only: {type: openai, api_key: sk-x, models: {g: gpt-4o}}\n"
ONE_STEP = "name: x\nsteps:\n  - id: a\n    prompt: hi\n"


def test_an_undeclared_local_server_gets_no_made_up_model(write) -> None:
    config = write("config.yaml", UNDECLARED_OLLAMA)
    with pytest.raises(InputError) as info:
        plan_of(write, ONE_STEP, config)
    error = only_error(info)
    assert "not declared" in error.message and f"{config}:3:" in error.message
    assert error.hint and "llm.ollama.models.generator" in error.hint


def test_a_built_in_default_model_is_stated_in_plan_and_validate(capsys, write) -> None:
    config = write("config.yaml", UNDECLARED_OPENAI)
    workflow = write("wf.yaml", ONE_STEP)
    plan = plan_of(write, ONE_STEP, config)
    target = plan.steps["a"].resolution.target
    assert (target.backend, target.model) == ("openai", "gpt-4o")
    assert any("built-in default model (not in your config)" in reason for reason in target.reasons)
    assert main(["validate", "--config", str(config), str(workflow)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"dse: warning: {workflow}:3:") and "built-in default model of openai" in err and f"{config}:3:" in err


def test_the_selector_and_fallbacks_skip_an_undeclared_local_server(write) -> None:
    config = load_config(write("config.yaml", "llm:\n  backend: openai\n  fallback_backends: [ollama]\n  openai: {api_key: sk-x, models: {generator: gpt-4o}}\n"), environ={})
    resolver = Resolver(config)
    assert {c.backend for c in resolver.candidates()} == {"openai"}
    target = resolver.resolve(Intent("a")).target
    with pytest.raises(InputError, match="not declared"):
        resolver.retarget(target, "ollama")
