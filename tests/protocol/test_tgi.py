"""Hugging Face backends: a TGI server's native paths and HF's hosted router, declared as two backend types.

TGI is exercised through a loopback stub speaking its documented routes (`/health`, `/info`,
`/metrics`, `/v1/chat/completions`); the hosted type is checked for what a user relies on
without a server: its default URL, its `HF_TOKEN`, and the words that name it in a directive.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stubs import Reply, StubServer, call, openai_chat

from dse.backends import ChatRequest, Message, TgiBackend, make_backend
from dse.config import load_config
from dse.routing import Intent, Resolver

INFO = {"model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "max_total_tokens": 4096, "max_input_tokens": 4095}
METRICS = "# TYPE tgi_queue_size gauge\ntgi_queue_size 3\n# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 5\n"
CONFIG = """\
llm:
  backend: hf
  hf:
    type: tgi
    base_url: {url}/v1
    api_key: ${{HF_TOKEN}}
    models: {{generator: HuggingFaceTB/SmolLM2-135M-Instruct}}
  huggingface: {{}}
"""


def backend(write: Callable[[str, str], Path], url: str, environ: dict[str, str]) -> TgiBackend:
    config = load_config(write("config.yaml", CONFIG.format(url=url)), environ=environ)
    adapter = make_backend(config.backends["hf"])
    assert isinstance(adapter, TgiBackend)
    return adapter


def test_tgi_answers_chat_with_the_token_and_reports_load_model_and_context(stub: StubServer, write: Callable[[str, str], Path]) -> None:
    stub.route("GET", "/health", Reply(body=b""))
    stub.route("GET", "/info", Reply(json=INFO))
    stub.route("GET", "/metrics", Reply(body=METRICS.encode(), headers={"Content-Type": "text/plain"}))
    stub.route("POST", "/v1/chat/completions", openai_chat("Hi!", model=INFO["model_id"]))
    request = ChatRequest(model=INFO["model_id"], messages=(Message("user", "hi"),), max_tokens=8)
    environ = {"HF_TOKEN": "hf_secret_token_0123"}

    answer = call(backend(write, stub.url, environ), lambda b: b.chat(request, f"{stub.url}/v1"))
    assert answer.text == "Hi!"
    sent = stub.calls("POST", "/v1/chat/completions")[0]
    assert sent.headers["authorization"] == "Bearer hf_secret_token_0123"
    report = call(backend(write, stub.url, environ), lambda b: b.report(f"{stub.url}/v1"))
    assert (report.ready, report.busy, report.waiting, report.models) == (True, 5, 3, frozenset({INFO["model_id"]}))
    assert call(backend(write, stub.url, environ), lambda b: b.context_limit(INFO["model_id"], f"{stub.url}/v1")) == 4096
    health = call(backend(write, stub.url, environ), lambda b: b.health(f"{stub.url}/v1"))
    assert health.ready and stub.calls("GET", "/health")[-1].headers["authorization"] == "Bearer hf_secret_token_0123"


def test_tgi_loading_its_model_is_not_ready_and_says_so(stub: StubServer, write: Callable[[str, str], Path]) -> None:
    stub.route("GET", "/health", Reply(status=503, json={"error": "loading"}))
    adapter = backend(write, stub.url, {"HF_TOKEN": "hf_secret_token_0123"})
    health = call(adapter, lambda b: b.health(f"{stub.url}/v1"))
    report = call(backend(write, stub.url, {"HF_TOKEN": "hf_secret_token_0123"}), lambda b: b.report(f"{stub.url}/v1"))
    assert (health.ready, health.loading, report.ready) == (False, True, False)


def test_the_hosted_type_has_its_url_and_token_and_a_directive_names_it(write: Callable[[str, str], Path]) -> None:
    missing = load_config(write("config.yaml", CONFIG.format(url="http://127.0.0.1:9")), environ={})
    assert missing.backends["huggingface"].unavailable == "HF_TOKEN is not set"
    config = load_config(write("config.yaml", CONFIG.format(url="http://127.0.0.1:9")), environ={"HF_TOKEN": "hf_secret_token_0123"})
    hosted = config.backends["huggingface"]
    assert hosted.base_url == "https://router.huggingface.co/v1" and hosted.api_key is not None
    resolution = Resolver(config).resolve(Intent("s", text="use hugging face for this: summarise"))
    assert resolution.target.backend == "huggingface" and resolution.target.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert Resolver(config).resolve(Intent("s", text="use tgi for this")).target.backend == "hf"
