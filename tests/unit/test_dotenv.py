"""`.env` beside the config: a strict KEY=VALUE parser, the environment winning, secrets treated alike."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from helpers import run_dse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stubs import StubServer, openai_chat

from dse.config import load_config
from dse.config.env import parse_dotenv
from dse.errors import InputError

SECRET = "sk-dotenv-0123456789abcdef"
TOKEN = "tok-dotenv-5556667778"


def test_the_forms_a_dotenv_file_may_hold() -> None:
    text = (
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "   INDENTED=  padded value   # a comment\n"
        "EMPTY=\n"
        "SINGLE='as # written \\n $HOME'\n"
        'DOUBLE="a \\"quote\\", a \\\\ and\\na newline"  # comment\n'
        "HASH=a#b\n"
        "WINDOWS=crlf\r\n"
        "  # an indented comment\n"
    )
    assert parse_dotenv(text) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "INDENTED": "padded value",
        "EMPTY": "",
        "SINGLE": "as # written \\n $HOME",
        "DOUBLE": 'a "quote", a \\ and\na newline',
        "HASH": "a#b",
        "WINDOWS": "crlf",
    }


@pytest.mark.parametrize(
    ("line", "column", "why"),
    [
        (f"OPENAI_API_KEY {SECRET}", 1, "not a KEY=VALUE line"),
        (f"OPENAI_API_KEY = {SECRET}", 1, "not a KEY=VALUE line"),
        (f"1KEY={SECRET}", 1, "not a KEY=VALUE line"),
        (f"export {SECRET}", 1, "not a KEY=VALUE line"),
        (f"  KEY='{SECRET}", 7, "an unclosed quote"),
        (f'KEY="{SECRET}" trailing', 34, "text after the closing quote"),
        (f'KEY="{SECRET}\\q"', 32, "an unknown escape"),
        (f"KEY={SECRET}'", 5, "a quote inside an unquoted value"),
    ],
)
def test_a_malformed_line_is_located_and_never_quoted(line: str, column: int, why: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_dotenv(f"# header\nGOOD=1\n{line}\n", "/some/.env")
    error = caught.value
    assert error.location is not None
    assert (error.location.file, error.location.line, error.location.column) == ("/some/.env", 3, column)
    assert why in error.message
    assert SECRET not in str(error) and SECRET[:8] not in str(error)


def test_a_key_set_twice_is_an_error_naming_both_lines() -> None:
    with pytest.raises(InputError) as caught:
        parse_dotenv(f"A=1\nKEY={SECRET}\nexport KEY=again\n", ".env")
    assert str(caught.value).startswith(".env:3:8: KEY is set twice (first on line 2)")
    assert SECRET not in str(caught.value)


# Round trip: any set of variables, each written in a form that can hold its value, parses back.
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
VALUES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


def _render(value: str, style: int) -> str | None:
    """The value in one of the three forms, or None when that form cannot hold it."""
    if style == 0:
        bare_ok = not any(c in value for c in "'\"\n\r") and value == value.strip(" \t") and " #" not in value and "\t#" not in value
        return value if bare_ok else None
    if style == 1:
        return f"'{value}'" if "'" not in value and "\n" not in value else None
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


@given(
    st.dictionaries(NAMES, st.tuples(VALUES, st.integers(0, 2), st.booleans(), st.booleans(), st.booleans()), max_size=8),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_generated_files_round_trip(variables: dict[str, tuple[str, int, bool, bool, bool]]) -> None:
    lines = []
    for name, (value, style, export, comment, blank) in variables.items():
        written = _render(value, style) or _render(value, 2)
        if blank:
            lines.append("   ")
        if comment:
            lines.append(f"# about {name}: it's \"quoted\" = {value!r}".replace("\n", " "))
        lines.append(f"{'export ' if export else ''}{name}={written}{'  # trailing' if comment and written != '' else ''}")
    assert parse_dotenv("\n".join(lines)) == {name: value for name, (value, *_) in variables.items()}


@given(st.lists(st.text(alphabet=string.printable + "é\u2028", max_size=40), max_size=8))
@settings(max_examples=400)
def test_any_text_parses_or_gives_a_located_error(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        values = parse_dotenv(text, "x/.env")
    except InputError as error:
        assert error.location is not None and error.location.file == "x/.env"
        assert error.location.line is not None and 1 <= error.location.line <= text.count("\n") + 1
        assert error.location.column is not None and error.location.column >= 1
        assert str(error).startswith(f"x/.env:{error.location.line}:")
    else:
        assert all(name.isidentifier() and "\n" not in value for name, value in values.items() if "\\n" not in text)


# Through the loader: beside the config, under the environment.
CONFIG = (
    "llm:\n  backend: gw\n  gw:\n    type: vllm\n    base_url: ${GW_URL}\n    api_key: ${MY_API_KEY}\n    models: {generator: m}\n"
    "tools:\n  asker: {llm: {model_key: generator}, prompt: 'Say ${GREETING:-hello}. ${SERVICE_TOKEN:-}'}\n"
)


def test_values_come_from_the_dotenv_beside_the_config_and_the_environment_wins(write) -> None:
    config = write("proj/config.yaml", CONFIG)
    write("proj/.env", f"GW_URL=http://127.0.0.1:9/v1\nMY_API_KEY={SECRET}\nGREETING=from-dotenv\nSERVICE_TOKEN={TOKEN}\n")
    loaded = load_config(config, environ={})
    assert loaded.backends["gw"].api_key is not None and loaded.backends["gw"].api_key.reveal() == SECRET
    assert loaded.tools["asker"].prompt == f"Say from-dotenv. {TOKEN}"
    secrets = {s.reveal() for s in loaded.secrets}
    assert SECRET in secrets and TOKEN in secrets, "an api_key and a *TOKEN* variable from .env are secrets"
    assert "from-dotenv" not in secrets, "and a plain one is not, as from the environment"
    overridden = load_config(config, environ={"GREETING": "from-environment", "MY_API_KEY": "sk-env-9876543210", "SERVICE_TOKEN": ""})
    assert overridden.tools["asker"].prompt == f"Say from-environment. {TOKEN}", "an empty variable counts as unset, as in ${VAR}"
    assert overridden.backends["gw"].api_key is not None and overridden.backends["gw"].api_key.reveal() == "sk-env-9876543210"
    elsewhere = write("other/config.yaml", CONFIG)
    assert load_config(elsewhere, environ={}).backends["gw"].unavailable == "GW_URL, MY_API_KEY are not set", "only the .env beside it"


def test_the_packaged_default_reads_the_dotenv_of_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).implicit["anthropic"].unavailable == "ANTHROPIC_API_KEY is not set"
    (tmp_path / ".env").write_text(f"ANTHROPIC_API_KEY={SECRET}\n")
    loaded = load_config(environ={})
    anthropic = loaded.implicit["anthropic"]
    assert anthropic.unavailable is None and anthropic.api_key is not None and anthropic.api_key.reveal() == SECRET


def test_a_malformed_dotenv_is_exit_2_naming_the_file_and_line(write, tmp_path: Path) -> None:
    config = write("config.yaml", CONFIG)
    write(".env", f"GW_URL=http://127.0.0.1:9/v1\n\nMY_API_KEY {SECRET}\n")
    result = run_dse("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"dse: error: {tmp_path / '.env'}:3:1: not a KEY=VALUE line (hint: write NAME=value (NAME: letters, digits and _, "
        "not starting with a digit; no blank before =), or # for a comment)"
    ]
    as_json = run_dse("validate", "--config", str(config), "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout)["errors"][0]["line"] == 3
    assert SECRET not in result.stdout + result.stderr + as_json.stdout + as_json.stderr


def _run_echo(stub: StubServer, write, tmp_path: Path, where: str) -> tuple[str, str]:
    """Run a workflow whose model answer echoes both values, with them in `.env` or in the environment."""
    stub.route("POST", "/v1/chat/completions", openai_chat(f"key {SECRET}, token {TOKEN}, greeting plain-greeting-value"))
    values = {"GW_URL": f"{stub.url}/v1", "MY_API_KEY": SECRET, "GREETING": "plain-greeting-value", "SERVICE_TOKEN": TOKEN}
    project = tmp_path / where
    config = write(f"{where}/config.yaml", CONFIG)
    workflow = write(f"{where}/wf.yaml", "name: echo\nsteps:\n  - id: ask\n    tool: asker\noutputs: {answer: '{{ steps.ask.output }}'}\n")
    if where == "dotenv":
        write(f"{where}/.env", "".join(f"{k}={v}\n" for k, v in values.items()))
        env = {}
    else:
        env = values
    result = run_dse("run", str(workflow), "--config", str(config), "--json", cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    files = "".join(p.read_text(errors="replace") for p in (project / ".dse").rglob("*") if p.is_file())
    assert SECRET not in result.stdout + result.stderr + files and TOKEN not in result.stdout + result.stderr + files
    return json.loads(result.stdout)["outputs"]["answer"], stub.calls("POST", "/v1/chat/completions")[-1].headers["authorization"]


def test_dotenv_values_are_secrets_by_exactly_the_environment_rule(stub: StubServer, write, tmp_path: Path) -> None:
    from_file, sent = _run_echo(stub, write, tmp_path, "dotenv")
    assert sent == f"Bearer {SECRET}", "the key from .env reached the server"
    from_environment, _ = _run_echo(stub, write, tmp_path, "environment")
    assert from_file == from_environment == "key ***, token ***, greeting plain-greeting-value"
