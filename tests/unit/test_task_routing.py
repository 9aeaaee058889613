"""Task routing: a step's or tool's `task:` picks the first available backend of `task_routing`.

The rest of the available entries become the target's fallback chain, and the router really
walks it (real loopback stub servers); the rule sits below directives and explicit backends.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stubs import StubServer, openai_chat, openai_error

from dse.backends import Message
from dse.cli import main
from dse.config import load_config
from dse.errors import InputError
from dse.routing import Intent, Resolver, Router

KEYS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}
CONFIG = """\
llm:
  backend: local
  fallback_backends: [local, openai]
  local: {type: llamacpp, base_url: "http://127.0.0.1:9", models: {generator: smol}}
  ollama: {models: {generator: "qwen2.5-coder:14b", triage: tinyllama}}
  foundry: {api_key: "${FOUNDRY_KEY}", models: {generator: phi-4}}
  openai: {api_key: "${OPENAI_API_KEY}", models: {generator: gpt-4o-mini, triage: gpt-3.5-turbo}}
  anthropic: {api_key: "${ANTHROPIC_API_KEY}", models: {generator: claude-3-5-sonnet-20241022}}
task_routing:
  code_generation: [foundry, ollama, openai]
  research:
    - anthropic
    - {backend: openai, model: gpt-4o}
tools:
  coder: {task: code_generation, llm: {model_key: generator}}
  researcher: {task: research}
  pinned: {task: code_generation, backend: anthropic}
  plain: {}
"""
FIRST_PICK = "task code_generation: task_routing picks ollama (first available of foundry, ollama, openai); fallbacks openai, local"


@pytest.fixture
def resolver(write) -> Resolver:
    return Resolver(load_config(write("config.yaml", CONFIG), environ=KEYS))


def resolve(resolver: Resolver, tool: str | None = None, **intent):
    return resolver.resolve(Intent("s", tool=resolver.config.tools[tool] if tool else None, **intent))


def test_first_available_entry_wins_and_the_unavailable_one_is_skipped_with_its_reason(resolver: Resolver) -> None:
    target = resolve(resolver, "coder").target
    assert (target.backend, target.model, target.role) == ("ollama", "qwen2.5-coder:14b", "generator")
    assert target.rule == "task route code_generation + tool coder model_key"
    assert "task code_generation: skips foundry (FOUNDRY_KEY is not set)" in target.reasons
    assert FIRST_PICK in target.reasons


def test_the_other_available_entries_come_before_fallback_backends_without_duplicates(resolver: Resolver) -> None:
    target = resolve(resolver, "coder").target
    assert target.fallbacks == ("openai", "local"), "foundry is unavailable; openai is not repeated from fallback_backends"
    chain = [resolver.retarget(target, name) for name in target.fallbacks]
    assert [(t.backend, t.model, t.role) for t in chain] == [("openai", "gpt-4o-mini", "generator"), ("local", "smol", "generator")]


def test_a_set_key_makes_the_first_entry_available_again(write) -> None:
    resolver = Resolver(load_config(write("config.yaml", CONFIG), environ={**KEYS, "FOUNDRY_KEY": "k"}))
    target = resolve(resolver, "coder").target
    assert (target.backend, target.model, target.fallbacks) == ("foundry", "phi-4", ("ollama", "openai", "local"))


def test_an_entry_with_a_model_sends_that_model_first_and_as_a_fallback(resolver: Resolver, write) -> None:
    target = resolve(resolver, "researcher").target
    assert (target.backend, target.model, target.fallbacks) == ("anthropic", "claude-3-5-sonnet-20241022", ("openai:gpt-4o", "local"))
    fallback = resolver.retarget(target, "openai:gpt-4o")
    assert (fallback.backend, fallback.model) == ("openai", "gpt-4o"), "the entry's model wins over the role's gpt-4o-mini"
    assert "fallback to openai: its task_routing entry names model gpt-4o" in fallback.reasons

    no_anthropic = Resolver(load_config(write("config.yaml", CONFIG), environ={"OPENAI_API_KEY": "sk-test"}))
    target = resolve(no_anthropic, "researcher").target
    assert (target.backend, target.model, target.rule) == ("openai", "gpt-4o", "task route research")
    assert "task research: skips anthropic (ANTHROPIC_API_KEY is not set)" in target.reasons


def test_a_step_task_replaces_the_tool_task(resolver: Resolver) -> None:
    target = resolve(resolver, "coder", task="research").target
    assert target.backend == "anthropic" and target.rule.startswith("task route research")
    assert "step 's' sets task: research" in target.reasons
    assert resolve(resolver, "plain", task="code_generation").target.backend == "ollama"


def test_an_explicit_backend_or_model_on_the_step_or_tool_wins(resolver: Resolver) -> None:
    assert resolve(resolver, "coder", backend="openai").target.backend == "openai"
    assert resolve(resolver, "pinned").target.backend == "anthropic", "the tool's own backend wins over its task"
    assert resolve(resolver, "pinned").target.rule == "tool backend"
    assert resolve(resolver, "coder", model="anthropic:claude-3-haiku-20240307").target.backend == "anthropic"
    assert resolve(resolver, "coder", model="gpt-4o").target.backend == "openai", "a model names its owner"


def test_a_directive_still_wins_over_the_task(resolver: Resolver) -> None:
    target = resolve(resolver, "coder", text="use claude for this: write a parser").target
    assert (target.backend, target.rule) == ("anthropic", "directive")


def test_a_task_nobody_routes_uses_the_default_backend_and_warns_for_the_step(resolver: Resolver) -> None:
    resolution = resolve(resolver, "coder", task="code_generaton")
    assert resolution.target.backend == "local"
    assert resolution.warnings == ("step 's': task 'code_generaton' is not in task_routing, so it does not route (did you mean 'code_generation'?)",)


def test_no_available_entry_falls_back_to_the_default_backend_and_says_so(write) -> None:
    text = CONFIG.replace("research:\n    - anthropic\n    - {backend: openai, model: gpt-4o}", "research: [anthropic, foundry]")
    resolution = resolve(Resolver(load_config(write("config.yaml", text), environ={})), "researcher")
    assert resolution.target.backend == "local"
    assert any("task research: none of anthropic, foundry is available, so the default backend applies" in w for w in resolution.warnings)


def test_an_unknown_backend_in_task_routing_is_an_error_at_its_list_item(write) -> None:
    text = CONFIG.replace("    - {backend: openai, model: gpt-4o}", "    - {backend: opneai, model: gpt-4o}")
    with pytest.raises(InputError) as caught:
        load_config(write("config.yaml", text), environ=KEYS)
    error = caught.value
    line = text.splitlines().index("    - {backend: opneai, model: gpt-4o}") + 1
    assert "unknown backend 'opneai'" in error.message and "did you mean 'openai'?" in (error.hint or "")
    assert (error.location.line, error.location.key) == (line, "task_routing.research[1]")

    flow = CONFIG.replace("[foundry, ollama, openai]", "[foundry, olama, openai]")
    with pytest.raises(InputError) as caught:
        load_config(write("config.yaml", flow), environ=KEYS)
    assert caught.value.location.line == flow.splitlines().index("  code_generation: [foundry, olama, openai]") + 1
    assert caught.value.location.key == "task_routing.code_generation[1]"


def test_a_malformed_entry_is_a_schema_error_at_its_key(write) -> None:
    text = CONFIG.replace("{backend: openai, model: gpt-4o}", "{model: gpt-4o}")
    with pytest.raises(InputError) as caught:
        load_config(write("config.yaml", text), environ=KEYS)
    assert caught.value.location.line == text.splitlines().index("    - {model: gpt-4o}") + 1


def test_a_tool_task_nobody_routes_is_warned_about_once_at_load(write) -> None:
    text = CONFIG.replace("plain: {}", "plain: {task: reserch}")
    config = load_config(write("config.yaml", text), environ=KEYS)
    line = text.splitlines().index("  plain: {task: reserch}") + 1
    [warning] = [w for w in config.warnings if "reserch" in w]
    assert warning.endswith(f":{line}:11: tools.plain.task: task 'reserch' is not in task_routing, so it does not route (did you mean 'research'?)")
    assert resolve(Resolver(config), "plain").warnings == (), "the step adds no second warning for its tool's task"


# --- the router walks the chain --------------------------------------------------------------------------


def test_the_router_falls_back_along_the_task_chain_with_the_pinned_model(write) -> None:
    with StubServer() as first, StubServer() as second, StubServer() as spare:
        first.route("POST", "/v1/chat/completions", openai_error(500, "overloaded", kind="server_error"))
        second.route("POST", "/v1/chat/completions", openai_chat("from second", model="pinned"))
        spare.route("POST", "/v1/chat/completions", openai_chat("from spare"))
        text = (
            "llm:\n  backend: spare\n  retry: {attempts: 1, backoff: 0}\n"
            "  gone: {type: openai, api_key: '${GONE_KEY}'}\n"
            f"  first: {{type: vllm, base_url: '{first.url}/v1', models: {{generator: one}}}}\n"
            f"  second: {{type: vllm, base_url: '{second.url}/v1', models: {{generator: two}}}}\n"
            f"  spare: {{type: vllm, base_url: '{spare.url}/v1', models: {{generator: three}}}}\n"
            "task_routing:\n  code_generation: [gone, first, {backend: second, model: pinned}]\n"
        )
        config = load_config(write("config.yaml", text), environ={})
        resolver = Resolver(config)
        target = resolver.resolve(Intent("s", task="code_generation")).target
        assert (target.backend, target.fallbacks) == ("first", ("second:pinned",))

        async def call():
            router = Router(config, resolver)
            try:
                return await router.chat(target, [Message("user", "write a parser")])
            finally:
                await router.aclose()

        response = asyncio.run(call())
        assert (response.text, response.backend) == ("from second", "second")
        assert [a.backend for a in response.attempts] == ["first", "second"]
        assert [r.json["model"] for r in second.calls("POST", "/v1/chat/completions")] == ["pinned"]
        assert len(first.calls("POST", "/v1/chat/completions")) == 1
        assert spare.requests == [], "the task chain replaces the default backend"


# --- first available, over any availability -------------------------------------------------------------


NAMES = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    blocks = "".join(f"  {n}: {{type: openai, api_key: k, models: {{generator: m-{n}}}}}\n" for n in NAMES)
    path = tmp_path_factory.mktemp("many") / "config.yaml"
    path.write_text(f"llm:\n  backend: e\n  fallback_backends: [d, e]\n{blocks}task_routing:\n  t: [a, b, c, d]\n")
    return Resolver(load_config(path, environ={}))


@settings(max_examples=60, deadline=None)
@given(down=st.sets(st.sampled_from(NAMES)), order=st.permutations(NAMES[:4]))
def test_first_available_wins_whatever_is_down(many: Resolver, down: set[str], order: list[str]) -> None:
    """The target is the first entry that is up; the rest that are up follow in order, then fallback_backends not yet named."""
    config = many.config
    backends = {n: replace(b, unavailable="down" if n in down else None) for n, b in config.backends.items()}
    routes = tuple(next(r for r in config.task_routing["t"] if r.backend == n) for n in order)
    resolver = Resolver(replace(config, backends=backends, task_routing={"t": routes}))
    resolution = resolver.resolve(Intent("s", task="t"))
    up = [n for n in order if n not in down]
    if not up:
        assert resolution.target.backend == "e" and resolution.warnings
        return
    tail = [n for n in config.fallback_backends if n not in up]
    assert resolution.target.backend == up[0]
    assert resolution.target.model == f"m-{up[0]}"
    assert resolution.target.fallbacks == (*up[1:], *tail)
    assert [r for r in resolution.target.reasons if "skips" in r] == [f"task t: skips {n} (down)" for n in order if n in down]


# --- dse plan --why --------------------------------------------------------------------------------------


def test_plan_why_names_the_task_rule(capsys, monkeypatch: pytest.MonkeyPatch, write) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FOUNDRY_KEY", raising=False)
    config = write("config.yaml", CONFIG)
    workflow = write(
        "wf.yaml",
        "name: tasks\nsteps:\n  - {id: gen, tool: coder, prompt: hi}\n  - {id: typo, prompt: hi, task: reserch}\n",
    )
    code = main(["plan", str(workflow), "--config", str(config), "--why"])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("gen "))
    assert "ollama" in row and "task route code_generation + tool coder model_key" in row
    assert f"  gen: {FIRST_PICK}" in out.splitlines()
    assert "  gen: task code_generation: skips foundry (FOUNDRY_KEY is not set)" in out.splitlines()
    [warning] = [line for line in err.splitlines() if "reserch" in line]
    assert warning.startswith("dse: warning: ") and f"{workflow}:4:" in warning and "did you mean 'research'?" in warning

    code = main(["plan", str(workflow), "--config", str(config), "--json"])
    rows = {row["step"]: row for row in json.loads(capsys.readouterr().out)["steps"]}
    assert (rows["gen"]["rule"], rows["gen"]["fallbacks"]) == ("task route code_generation + tool coder model_key", ["openai", "local"])


def test_validate_warns_once_per_unrouted_task(capsys, monkeypatch: pytest.MonkeyPatch, write) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    config = write("config.yaml", CONFIG.replace("plain: {}", "plain: {task: reserch}"))
    workflow = write("wf.yaml", "name: tasks\nsteps:\n  - {id: one, tool: plain, prompt: a}\n  - {id: two, tool: plain, prompt: b}\n")
    code = main(["validate", "--config", str(config), str(workflow)])
    _, err = capsys.readouterr()
    assert code == 0
    assert len([line for line in err.splitlines() if "reserch" in line]) == 1


def test_the_task_of_a_step_is_read_from_the_workflow(write) -> None:
    from dse.workflow import load_workflow

    workflow = load_workflow(write("wf.yaml", "name: w\nsteps:\n  - {id: s, prompt: hi, task: research}\n"))
    assert workflow.step("s").task == "research"


def test_a_step_task_outside_the_schema_is_rejected_at_its_line(write) -> None:
    from dse.workflow import load_workflow

    with pytest.raises(InputError) as caught:
        load_workflow(write("wf.yaml", "name: w\nsteps:\n  - id: s\n    prompt: hi\n    task: ''\n"))
    assert caught.value.location.line == 5
