"""What each DiSE guide snippet (tests/fixtures/dise/) means, written out explicitly.

The mostlylucid DiSE backend guide is the baseline config format (DESIGN.md section 3): every
snippet must validate *and behave as the guide says*. Each fixture's entry here is that behaviour
in checkable form, taken from the guide section named in the fixture's `# DiSE guide:` line:

- `blocks`: each backend the file declares, its type, where it is, its roles, and why it is
  unavailable when no variable is set (None: usable as written);
- `calls`: what a step gets: which backend, model, role, Azure deployment, endpoints, fallbacks,
  and what the fallback chain would send when the first choice fails;
- defaults: primary backend, default backend, fallbacks, temperature and max_tokens, embeddings,
  selector weights, and the warnings a user is shown.

tests/unit/test_config_loader.py checks the loaded config against this, test_resolver.py the
resolutions, test_cli_commands.py what `dse validate` and `dse plan` show, test_schemas.py that
every fixture has an entry. Values a fixture does not set come from the engine's documented
defaults (a vendor's URL, a backend's built-in model for a role) and are marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "dise"

# Every variable the fixtures read, set: everything declared is usable.
KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "OPENAI_API_KEY": "sk-test",
    "AZURE_OPENAI_API_KEY": "az-test",
    "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
}
DEFAULT_WEIGHTS = {"context_window": 30, "speed": 25, "cost": 15, "quality": 15, "specialization": 15}
# Built-in defaults the engine documents for a backend that lists no model for a role.
OLLAMA_DEFAULT = "qwen2.5-coder:14b"
ANTHROPIC_DEFAULT = "claude-3-5-sonnet-20241022"
OPENAI_DEFAULT = "gpt-4o"
AZURE_DEFAULT = "gpt-4"
ANTHROPIC_URL = "https://api.anthropic.com"
OPENAI_URL = "https://api.openai.com/v1"
OLLAMA_URL = "http://localhost:11434"
AZURE_URL = KEYS["AZURE_OPENAI_ENDPOINT"]


@dataclass(frozen=True)
class Block:
    """One backend as loaded. `url` is base_url, or an Azure block's endpoint (with KEYS set)."""

    type: str
    url: str | None
    models: Mapping[str, str] = field(default_factory=dict)
    unavailable: str | None = None  # the reason shown when none of KEYS is set
    key_env: str | None = None
    endpoints: Mapping[str | None, tuple[str, ...]] = field(default_factory=dict)
    context_windows: Mapping[str, int] = field(default_factory=dict)
    embedding_model: str | None = None
    # role -> (deployment, model, endpoint)
    deployments: Mapping[str, tuple[str, str | None, str | None]] = field(default_factory=dict)
    api_version: str | None = None
    deployment_name: str | None = None


@dataclass(frozen=True)
class Call:
    """A step that names `tool` and/or `model_key` (neither: a plain prompt) and where it goes."""

    step: str
    backend: str
    model: str
    role: str | None
    tool: str | None = None
    model_key: str | None = None
    deployment: str | None = None
    endpoints: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    # What each fallback sends for the same role: (backend, model), in order.
    fallback_targets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Guide:
    section: str  # the fixture's "# DiSE guide:" line
    backend: str  # llm.backend as loaded ("" when the file names no backend at all)
    default_backend: str
    blocks: Mapping[str, Block]
    calls: tuple[Call, ...]
    fallbacks: tuple[str, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    embedding: tuple[str, str] | None = None  # (backend, model) of default_embedding_backend
    no_embeddings: tuple[str, ...] = ()  # backends the guide says cannot embed
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    selector_enabled: bool = True
    warnings: tuple[str, ...] = ()  # a substring of each warning, in order
    tools: tuple[str, ...] = ()


def plain(backend: str, model: str, url: str, *, role: str = "generator", fallbacks: tuple[str, ...] = (), **kw) -> Call:
    return Call("plain", backend, model, role, endpoints=(url,), fallbacks=fallbacks, **kw)


def key(role: str, backend: str, model: str, url: str, **kw) -> Call:
    return Call(f"key_{role}", backend, model, role, model_key=role, endpoints=kw.pop("endpoints", (url,)), **kw)


def tool(name: str, backend: str, model: str, url: str, *, role: str | None = None, **kw) -> Call:
    return Call(f"tool_{name}", backend, model, role, tool=name, endpoints=(url,), **kw)


OLLAMA_ROLES = {"overseer": "llama3", "generator": "qwen2.5-coder:14b", "evaluator": "llama3", "triage": "tinyllama"}
OPENAI_ROLES = {"overseer": "gpt-4", "generator": "gpt-4", "evaluator": "gpt-4", "triage": "gpt-3.5-turbo"}
CLAUDE_ROLES = {
    "overseer": "claude-3-5-sonnet-20241022",
    "generator": "claude-3-5-sonnet-20241022",
    "evaluator": "claude-3-5-sonnet-20241022",
    "triage": "claude-3-haiku-20240307",
}
LMSTUDIO_ROLES = {"overseer": "local-model", "generator": "local-model", "evaluator": "local-model"}
OLLAMA_WINDOWS = {"llama3": 8192, "qwen2.5-coder:14b": 131072}
OPENAI_WINDOWS = {"gpt-4": 8192, "gpt-4-turbo": 128000}
CLAUDE_WINDOWS = {"claude-3-5-sonnet-20241022": 200000, "claude-3-opus-20240229": 200000}
AZURE_WINDOWS = {"gpt-4": 8192, "gpt-35-turbo": 16385}
AZURE_DEPLOYMENTS = {"overseer": ("gpt-4", "gpt-4", None), "generator": ("gpt-4-code", "gpt-4", None)}
NO_ANTHROPIC_KEY = "ANTHROPIC_API_KEY is not set"
NO_OPENAI_KEY = "OPENAI_API_KEY is not set"
NO_AZURE = "AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT are not set"

ANTHROPIC_BARE = Block("anthropic", ANTHROPIC_URL, unavailable=NO_ANTHROPIC_KEY, key_env="ANTHROPIC_API_KEY")
OPENAI_BARE = Block("openai", OPENAI_URL, unavailable=NO_OPENAI_KEY, key_env="OPENAI_API_KEY")
OLLAMA_BARE = Block("ollama", OLLAMA_URL)


GUIDE: dict[str, Guide] = {
    "01_quickstart_simplest_ollama": Guide(
        "Quick Start / Simplest Setup (Ollama)",
        backend="ollama",
        default_backend="ollama",
        blocks={"ollama": OLLAMA_BARE},
        calls=(plain("ollama", OLLAMA_DEFAULT, OLLAMA_URL),),
    ),
    "02_quickstart_all_anthropic": Guide(
        "Quick Start / All Anthropic Setup",
        backend="anthropic",
        default_backend="anthropic",
        blocks={"anthropic": ANTHROPIC_BARE},
        calls=(plain("anthropic", ANTHROPIC_DEFAULT, ANTHROPIC_URL),),
    ),
    "03_quickstart_multi_backend": Guide(
        "Quick Start / Multi-Backend Setup",
        backend="anthropic",
        default_backend="anthropic",
        fallbacks=("openai", "ollama"),
        blocks={"anthropic": ANTHROPIC_BARE, "openai": OPENAI_BARE, "ollama": OLLAMA_BARE},
        # "If Anthropic fails, tries OpenAI, then Ollama": the same role on each, in that order.
        calls=(
            plain(
                "anthropic", ANTHROPIC_DEFAULT, ANTHROPIC_URL,
                fallbacks=("openai", "ollama"),
                fallback_targets=(("openai", OPENAI_DEFAULT), ("ollama", OLLAMA_DEFAULT)),
            ),
        ),
    ),
    "04_top_level_llm_config": Guide(
        "Configuration Format / Top-Level LLM Config",
        backend="ollama",
        default_backend="ollama",
        fallbacks=("openai",),
        temperature=0.7,
        max_tokens=4096,
        embedding=("openai", "text-embedding-3-small"),
        no_embeddings=("anthropic",),
        blocks={
            "ollama": Block("ollama", OLLAMA_URL, OLLAMA_ROLES, context_windows=OLLAMA_WINDOWS),
            "openai": Block(
                "openai", OPENAI_URL, OPENAI_ROLES, NO_OPENAI_KEY, "OPENAI_API_KEY",
                context_windows=OPENAI_WINDOWS, embedding_model="text-embedding-3-small",
            ),
            "anthropic": Block(
                "anthropic", ANTHROPIC_URL, CLAUDE_ROLES, NO_ANTHROPIC_KEY, "ANTHROPIC_API_KEY", context_windows=CLAUDE_WINDOWS
            ),
            "azure": Block(
                "azure", AZURE_URL, unavailable=NO_AZURE, key_env="AZURE_OPENAI_API_KEY", context_windows=AZURE_WINDOWS,
                deployments=AZURE_DEPLOYMENTS, api_version="2024-02-15-preview", deployment_name="gpt-4",
            ),
            "lmstudio": Block("lmstudio", "http://localhost:1234/v1", LMSTUDIO_ROLES, context_windows={"local-model": 8192}),
        },
        # global_defaults reach every tool: ollama, at temperature 0.7 and 4096 tokens; openai takes over a failed role.
        calls=(
            plain("ollama", "qwen2.5-coder:14b", OLLAMA_URL, fallbacks=("openai",), fallback_targets=(("openai", "gpt-4"),)),
            key("overseer", "ollama", "llama3", OLLAMA_URL, fallbacks=("openai",), fallback_targets=(("openai", "gpt-4"),)),
            key("triage", "ollama", "tinyllama", OLLAMA_URL, fallbacks=("openai",), fallback_targets=(("openai", "gpt-3.5-turbo"),)),
        ),
    ),
    "05_backend_ollama": Guide(
        "Backend-Specific Setup / Ollama",
        backend="ollama",
        default_backend="ollama",
        blocks={
            "ollama": Block(
                "ollama", OLLAMA_URL, OLLAMA_ROLES,
                endpoints={"overseer": (OLLAMA_URL, "http://server2:11434")}, context_windows=OLLAMA_WINDOWS,
            )
        },
        # Only overseer is load-balanced over two servers; every other role uses base_url.
        calls=(
            key("overseer", "ollama", "llama3", OLLAMA_URL, endpoints=(OLLAMA_URL, "http://server2:11434")),
            key("generator", "ollama", "qwen2.5-coder:14b", OLLAMA_URL),
            key("evaluator", "ollama", "llama3", OLLAMA_URL),
            key("triage", "ollama", "tinyllama", OLLAMA_URL),
        ),
    ),
    "06_backend_openai": Guide(
        "Backend-Specific Setup / OpenAI",
        backend="openai",
        default_backend="openai",
        blocks={
            "openai": Block(
                "openai", OPENAI_URL, OPENAI_ROLES, NO_OPENAI_KEY, "OPENAI_API_KEY",
                context_windows=OPENAI_WINDOWS, embedding_model="text-embedding-3-small",
            )
        },
        calls=(
            key("overseer", "openai", "gpt-4", OPENAI_URL),
            key("generator", "openai", "gpt-4", OPENAI_URL),
            key("evaluator", "openai", "gpt-4", OPENAI_URL),
            key("triage", "openai", "gpt-3.5-turbo", OPENAI_URL),
        ),
    ),
    "07_backend_anthropic": Guide(
        "Backend-Specific Setup / Anthropic",
        backend="anthropic",
        default_backend="anthropic",
        # "Anthropic doesn't provide embedding models. Use OpenAI or Ollama for embeddings."
        no_embeddings=("anthropic",),
        blocks={
            "anthropic": Block(
                "anthropic", ANTHROPIC_URL, CLAUDE_ROLES, NO_ANTHROPIC_KEY, "ANTHROPIC_API_KEY", context_windows=CLAUDE_WINDOWS
            )
        },
        calls=(
            key("overseer", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL),
            key("generator", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL),
            key("evaluator", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL),
            key("triage", "anthropic", "claude-3-haiku-20240307", ANTHROPIC_URL),
        ),
    ),
    "08_backend_azure": Guide(
        "Backend-Specific Setup / Azure OpenAI",
        backend="azure",
        default_backend="azure",
        blocks={
            "azure": Block(
                "azure", AZURE_URL, unavailable=NO_AZURE, key_env="AZURE_OPENAI_API_KEY", context_windows=AZURE_WINDOWS,
                deployments=AZURE_DEPLOYMENTS, api_version="2024-02-15-preview", deployment_name="gpt-4",
            )
        },
        # "Azure uses deployments not model names": a role goes to its deployment; others to deployment_name.
        calls=(
            key("overseer", "azure", "gpt-4", AZURE_URL, deployment="gpt-4"),
            key("generator", "azure", "gpt-4", AZURE_URL, deployment="gpt-4-code"),
            key("evaluator", "azure", "gpt-4", AZURE_URL, deployment="gpt-4"),
        ),
    ),
    "09_backend_lmstudio": Guide(
        "Backend-Specific Setup / LM Studio",
        backend="lmstudio",
        default_backend="lmstudio",
        blocks={"lmstudio": Block("lmstudio", "http://localhost:1234/v1", LMSTUDIO_ROLES, context_windows={"local-model": 8192})},
        calls=(
            key("overseer", "lmstudio", "local-model", "http://localhost:1234/v1"),
            key("generator", "lmstudio", "local-model", "http://localhost:1234/v1"),
            key("evaluator", "lmstudio", "local-model", "http://localhost:1234/v1"),
        ),
    ),
    "10_tools_option1_global_backend": Guide(
        "Tools Configuration / Option 1: Global Backend (Recommended)",
        backend="anthropic",
        default_backend="anthropic",
        tools=("my_tool",),
        blocks={
            "anthropic": Block(
                "anthropic", ANTHROPIC_URL, {"generator": "claude-3-5-sonnet-20241022"}, NO_ANTHROPIC_KEY, "ANTHROPIC_API_KEY"
            )
        },
        calls=(tool("my_tool", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL, role="generator"),),
    ),
    "11_tools_option2_override_per_tool": Guide(
        "Tools Configuration / Option 2: Override Per Tool",
        backend="ollama",
        default_backend="ollama",
        tools=("expensive_tool",),
        blocks={"ollama": OLLAMA_BARE, "anthropic": ANTHROPIC_BARE},
        calls=(
            plain("ollama", OLLAMA_DEFAULT, OLLAMA_URL),
            tool("expensive_tool", "anthropic", "claude-3-opus-20240229", ANTHROPIC_URL),
        ),
    ),
    "12_tools_option3_mixed_backends": Guide(
        "Tools Configuration / Option 3: Mixed Backends",
        # The snippet sets no llm.backend: global_defaults.default_backend stands for it.
        backend="ollama",
        default_backend="ollama",
        tools=("cheap_tool", "expensive_tool"),
        blocks={"ollama": OLLAMA_BARE, "openai": OPENAI_BARE},
        calls=(
            tool("cheap_tool", "ollama", OLLAMA_DEFAULT, OLLAMA_URL, role="generator"),
            tool("expensive_tool", "openai", "gpt-4", OPENAI_URL),
        ),
    ),
    "13_model_key": Guide(
        "Tools Configuration / Model Keys vs Direct Models (Model Key)",
        backend="anthropic",
        default_backend="anthropic",
        tools=("my_tool",),
        blocks={
            "anthropic": Block(
                "anthropic", ANTHROPIC_URL, {"generator": "claude-3-5-sonnet-20241022"}, NO_ANTHROPIC_KEY, "ANTHROPIC_API_KEY"
            )
        },
        calls=(tool("my_tool", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL, role="generator"),),
    ),
    "14_direct_model": Guide(
        "Tools Configuration / Model Keys vs Direct Models (Direct Model)",
        backend="anthropic",
        default_backend="anthropic",
        tools=("my_tool",),
        blocks={"anthropic": ANTHROPIC_BARE},
        calls=(tool("my_tool", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL),),
    ),
    "15_model_selector": Guide(
        "Model Selector Tool / Configuration",
        backend="",
        default_backend="",
        blocks={},
        calls=(),
        weights={"context_window": 30, "speed": 25, "cost": 15, "quality": 15, "specialization": 15},
    ),
    "16_pattern1_cost_optimization": Guide(
        "Advanced Patterns / Pattern 1: Cost Optimization",
        backend="ollama",
        default_backend="ollama",
        tools=("critical_analysis",),
        blocks={
            "ollama": Block("ollama", OLLAMA_URL, {"triage": "tinyllama", "evaluator": "llama3"}),
            "anthropic": ANTHROPIC_BARE,
        },
        # Cheap models for triage; the expensive one only where a tool asks for it.
        calls=(
            key("triage", "ollama", "tinyllama", OLLAMA_URL),
            key("evaluator", "ollama", "llama3", OLLAMA_URL),
            tool("critical_analysis", "anthropic", "claude-3-opus-20240229", ANTHROPIC_URL),
        ),
    ),
    "17_pattern2_speed_optimization": Guide(
        "Advanced Patterns / Pattern 2: Speed Optimization",
        backend="openai",
        default_backend="openai",
        blocks={
            "openai": Block(
                "openai", OPENAI_URL, {"triage": "gpt-3.5-turbo", "generator": "gpt-4-turbo"}, NO_OPENAI_KEY, "OPENAI_API_KEY"
            )
        },
        calls=(
            plain("openai", "gpt-4-turbo", OPENAI_URL),
            key("triage", "openai", "gpt-3.5-turbo", OPENAI_URL),
        ),
    ),
    "18_pattern3_privacy_first": Guide(
        "Advanced Patterns / Pattern 3: Privacy-First",
        backend="ollama",
        default_backend="ollama",
        blocks={"ollama": Block("ollama", OLLAMA_URL, {"overseer": "llama3", "generator": "qwen2.5-coder:14b"})},
        calls=(
            plain("ollama", "qwen2.5-coder:14b", OLLAMA_URL),
            key("overseer", "ollama", "llama3", OLLAMA_URL),
        ),
    ),
    "19_pattern4_enterprise_hybrid": Guide(
        "Advanced Patterns / Pattern 4: Enterprise Hybrid",
        backend="azure",
        default_backend="azure",
        fallbacks=("ollama",),
        blocks={
            "azure": Block("azure", AZURE_URL, unavailable=NO_AZURE, key_env="AZURE_OPENAI_API_KEY"),
            "ollama": Block("ollama", "http://internal-ollama:11434"),
        },
        # Azure first; the local fallback is the internal Ollama server.
        calls=(
            plain(
                "azure", AZURE_DEFAULT, AZURE_URL, deployment=AZURE_DEFAULT,
                fallbacks=("ollama",), fallback_targets=(("ollama", OLLAMA_DEFAULT),),
            ),
        ),
    ),
    "20_pattern5_multi_region_azure": Guide(
        "Advanced Patterns / Pattern 5: Multi-Region Azure",
        backend="azure",
        default_backend="azure",
        blocks={
            "azure": Block(
                "azure", AZURE_URL, unavailable="AZURE_OPENAI_API_KEY is not set", key_env="AZURE_OPENAI_API_KEY",
                deployments={
                    "us_east": ("gpt-4-us-east", None, "https://us-east.openai.azure.com"),
                    "eu_west": ("gpt-4-eu-west", None, "https://eu-west.openai.azure.com"),
                },
            )
        },
        # Each region's deployment is called at its own endpoint.
        calls=(
            key("us_east", "azure", "gpt-4-us-east", "https://us-east.openai.azure.com", deployment="gpt-4-us-east"),
            key("eu_west", "azure", "gpt-4-eu-west", "https://eu-west.openai.azure.com", deployment="gpt-4-eu-west"),
        ),
    ),
    "21_env_var_api_key": Guide(
        "Environment Variables / Or use in config",
        backend="openai",
        default_backend="openai",
        blocks={"openai": OPENAI_BARE},
        calls=(plain("openai", OPENAI_DEFAULT, OPENAI_URL),),
    ),
    "22_migration_before": Guide(
        "Migration Guide / From Ollama-Only to Multi-Backend (Before)",
        backend="ollama",
        default_backend="ollama",
        blocks={"ollama": OLLAMA_BARE},
        calls=(plain("ollama", OLLAMA_DEFAULT, OLLAMA_URL),),
        warnings=("a top-level `ollama:` block is the pre-multi-backend format; it is read as `llm.ollama` (move it under `llm:`)",),
    ),
    "23_migration_after": Guide(
        "Migration Guide / From Ollama-Only to Multi-Backend (After)",
        backend="ollama",
        default_backend="ollama",
        blocks={
            "ollama": Block("ollama", OLLAMA_URL, {"overseer": "llama3", "generator": "qwen2.5-coder:14b"}),
            "anthropic": Block(
                "anthropic", ANTHROPIC_URL, {"overseer": "claude-3-5-sonnet-20241022"}, NO_ANTHROPIC_KEY, "ANTHROPIC_API_KEY"
            ),
        },
        # Anthropic is configured, but only a tool or step that asks for it goes there.
        calls=(
            plain("ollama", "qwen2.5-coder:14b", OLLAMA_URL),
            key("overseer", "ollama", "llama3", OLLAMA_URL),
        ),
    ),
    "24_migration_override_per_tool": Guide(
        "Migration Guide / From Ollama-Only to Multi-Backend (Then override per tool)",
        backend="ollama",
        default_backend="ollama",
        tools=("complex_reasoning",),
        blocks={
            "ollama": Block("ollama", OLLAMA_URL, {"overseer": "llama3", "generator": "qwen2.5-coder:14b"}),
            "anthropic": Block(
                "anthropic", ANTHROPIC_URL, {"overseer": "claude-3-5-sonnet-20241022"}, NO_ANTHROPIC_KEY, "ANTHROPIC_API_KEY"
            ),
        },
        calls=(
            plain("ollama", "qwen2.5-coder:14b", OLLAMA_URL),
            key("overseer", "ollama", "llama3", OLLAMA_URL),
            # No model or model_key: anthropic's only role, overseer.
            tool("complex_reasoning", "anthropic", "claude-3-5-sonnet-20241022", ANTHROPIC_URL, role="overseer"),
        ),
    ),
}

NAMES = sorted(GUIDE)


def fixture(name: str) -> Path:
    return FIXTURES / f"{name}.yaml"
