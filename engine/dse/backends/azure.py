"""Azure OpenAI: the OpenAI API addressed by deployment, with an API version on every request.

A step's model is a deployment name here, and a deployment may pin its own API version over
the client's; the endpoint comes from the block's `endpoint:` or `AZURE_OPENAI_ENDPOINT`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .openai_compat import OpenAICompatBackend
from .registry import STRUCTURED, BackendType

if TYPE_CHECKING:
    from openai import AsyncOpenAI

# A GA version that has chat, embeddings, models and `stream_options`; configs may pin another.
_API_VERSION = "2024-10-21"


class AzureBackend(OpenAICompatBackend):
    def _make_client(self, endpoint: str, options: dict[str, Any]) -> AsyncOpenAI:
        from openai import AsyncAzureOpenAI

        return AsyncAzureOpenAI(azure_endpoint=endpoint, api_version=self.config.api_version or _API_VERSION, **options)

    def _query(self, model: str) -> dict[str, str]:
        pinned = next((d.api_version for d in self.config.deployments.values() if d.deployment == model), None)
        return {"api-version": pinned} if pinned else {}

    def _missing_model_hint(self, endpoint: str, model: str) -> str:
        return f"check the deployment name {model!r} (not the model name)"


TYPES = (
    BackendType(
        "azure",
        AzureBackend,
        "OpenAI-compatible (Azure deployments)",
        local=False,
        key_env="AZURE_OPENAI_API_KEY",
        url_env="AZURE_OPENAI_ENDPOINT",
        auth_header="api-key",
        auth_scheme="",
        sdk="openai",
        directive_words=(r"azure[ \t]+open[ \t]?ai", r"azure"),
        default_models={None: "gpt-4"},
        structured_output=STRUCTURED,
    ),
)
