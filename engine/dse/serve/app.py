"""The HTTP routes of `dse serve`, on Starlette: each reads its protocol, asks the gateway, writes its protocol.

Every route goes through `_guarded`, which checks the client's key, turns a `Problem` into
the error body of the route's protocol with its status, and counts the request for
`/metrics`. Nothing here resolves or sends: that is `Gateway`.
"""

from __future__ import annotations

import hmac
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, Router

from ..backends.types import StreamChunk
from ..errors import DseError
from ..routing import Target
from ..spend.control import CURRENT_STEP
from . import anthropic_api, openai_api
from .call import ChatCall
from .gateway import Gateway, Opened
from .problems import API, AUTHENTICATION, NOT_FOUND, OVERLOADED, TOO_LARGE, Problem, invalid

OPENAI, ANTHROPIC = "openai", "anthropic"
_ERROR_BODY = {OPENAI: openai_api.error_body, ANTHROPIC: anthropic_api.error_body}
Handler = Callable[[Request], Awaitable[Response]]


class _Writer(Protocol):
    def events(self, chunk: StreamChunk) -> Iterator[bytes]: ...

    def failure(self, problem: Problem) -> bytes: ...


def build_app(gateway: Gateway) -> Router:
    """The routes as the ASGI app itself: every route catches what it expects, so Starlette's error middleware would only add cost per request."""
    settings = gateway.config.serve
    keys = [key.reveal().encode() for key in settings.api_keys]
    metrics = gateway.metrics
    clean = gateway.redactor.text

    def allowed(request: Request) -> bool:
        """No keys configured, or one of them in `x-api-key` or as `Authorization: Bearer KEY` (the scheme in any case)."""
        if not keys:
            return True
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        given = [request.headers.get("x-api-key", ""), token.strip() if scheme.lower() == "bearer" else ""]
        return any(hmac.compare_digest(value.encode(), key) for value in given if value for key in keys)

    def guarded(route: str, protocol: str | None, *, public: bool = False) -> Callable[[Handler], Handler]:
        """Key check, errors in the protocol's own format, and the request counted; `protocol` None: read from headers."""

        def wrap(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                started = time.perf_counter()
                spoken = protocol or (ANTHROPIC if "anthropic-version" in request.headers else OPENAI)
                token = CURRENT_STEP.set(f"gateway {route}")
                try:
                    if not public and not allowed(request):
                        raise Problem(401, AUTHENTICATION, "a valid API key is required (Authorization: Bearer KEY, or x-api-key)")
                    response = await handler(request)
                except Problem as problem:
                    metrics.error(problem.kind)
                    response = _problem_response(problem, spoken)
                except Exception as exc:  # a bug: one line on stderr, and an answer in the client's own format
                    print(f"dse serve: error: {route}: {clean(f'{type(exc).__name__}: {exc}')}", file=sys.stderr, flush=True)
                    metrics.error(API)
                    response = _problem_response(Problem(500, API, "dse serve failed on this request; its stderr says why"), spoken)
                finally:
                    CURRENT_STEP.reset(token)
                if not isinstance(response, StreamingResponse):
                    upstream = request.state.upstream if hasattr(request.state, "upstream") else None
                    metrics.request(route, response.status_code, time.perf_counter() - started, upstream)
                return response

            return endpoint

        return wrap

    async def body(request: Request) -> Mapping[str, Any]:
        return await _json_body(request, settings.max_body_bytes)

    def directives(request: Request) -> bool:
        return request.headers.get("x-dse-directives", "").lower() in ("on", "true", "1", "yes")

    async def answer_chat(request: Request, call: ChatCall, protocol: str, route: str) -> Response:
        if call.stream:
            opened = await gateway.open_stream(call, directives(request))
            name = gateway.served_name(opened.target, opened.first.backend)
            writer: _Writer = openai_api.ChatStream(name, call.include_usage) if protocol == OPENAI else anthropic_api.MessageStream(name)
            headers = _served_headers(opened.target, opened.first.backend, opened.first.endpoint, len(opened.first.attempts), opened.first.cached, clean)
            started = time.perf_counter()

            def done() -> None:
                metrics.request(route, 200, time.perf_counter() - started, None)

            return StreamingResponse(_sse(opened, writer, gateway, done), media_type="text/event-stream", headers=headers)
        target, response = await gateway.chat(call, directives(request))
        if len(response.attempts) == 1 and not response.cached:
            request.state.upstream = response.latency
        name = gateway.served_name(target, response.backend)
        document = openai_api.chat_answer(response, name) if protocol == OPENAI else anthropic_api.message_answer(response, name)
        return _json(document, _served_headers(target, response.backend, response.endpoint, len(response.attempts), response.cached, clean))

    @guarded("/v1/chat/completions", OPENAI)
    async def chat_completions(request: Request) -> Response:
        return await answer_chat(request, openai_api.read_chat(await body(request)), OPENAI, "/v1/chat/completions")

    @guarded("/v1/messages", ANTHROPIC)
    async def messages(request: Request) -> Response:
        return await answer_chat(request, anthropic_api.read_messages(await body(request)), ANTHROPIC, "/v1/messages")

    @guarded("/v1/embeddings", OPENAI)
    async def embeddings(request: Request) -> Response:
        model, texts, as_base64 = openai_api.read_embeddings(await body(request))
        target, response = await gateway.embed(model, texts)
        request.state.upstream = response.latency
        document = openai_api.embeddings_answer(response.vectors, f"{target.backend}:{target.model}", response.usage.prompt_tokens, as_base64)
        return _json(document, _served_headers(target, response.backend, response.endpoint, 1, False, clean))

    @guarded("/v1/models", None)
    async def models(request: Request) -> Response:
        names = [(offer.name, offer.owner) for offer in gateway.names.offers()]
        anthropic = "anthropic-version" in request.headers
        return _json(anthropic_api.models_answer(names) if anthropic else openai_api.models_answer(names))

    @guarded("/v1/providers", OPENAI)
    async def providers(request: Request) -> Response:
        return _json({"object": "list", "data": gateway.health.providers()})

    @guarded("/v1/providers/{name}/models", OPENAI)
    async def provider_models(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in gateway.config.backends:
            raise Problem(404, NOT_FOUND, f"no backend named {name!r}; GET /v1/providers lists them", "name")
        return _json({"object": "list", "data": await _discovered(gateway, name)})

    @guarded("/v1/providers/health-check", OPENAI)
    async def health_check(request: Request) -> Response:
        await gateway.health.check()
        return _json({"object": "list", "data": gateway.health.providers()})

    @guarded("/health", OPENAI, public=True)
    async def health(request: Request) -> Response:
        """Open to load balancers; the backends and their endpoints only to a client with a key."""
        ready = gateway.health.ready()
        document: dict[str, Any] = {"status": "ok" if ready else "unavailable"}
        if allowed(request):
            document.update(default_backend=gateway.config.default_backend, backends=gateway.health.providers())
        return _json(document, status=200 if ready else 503)

    @guarded("/metrics", OPENAI)
    async def metrics_route(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/providers", providers, methods=["GET"]),
        Route("/v1/providers/health-check", health_check, methods=["POST"]),
        Route("/v1/providers/{name}/models", provider_models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]
    return Router(routes=routes)


async def _json_body(request: Request, limit: int) -> Mapping[str, Any]:
    """The body as a JSON object, read no further than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, TOO_LARGE, f"the body is {declared} bytes; this gateway takes at most {limit} (serve.max_body_bytes)")
    parts, size = [], 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise Problem(413, TOO_LARGE, f"the body is over {limit} bytes (serve.max_body_bytes)")
            parts.append(part)
    except ClientDisconnect:
        raise invalid("the client went away before its request body arrived") from None
    raw = b"".join(parts)
    try:
        document = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"the body is not valid JSON: {exc if isinstance(exc, ValueError) else 'nested too deeply'}") from None
    if not isinstance(document, dict):
        raise invalid("the body must be a JSON object")
    if b"\\ud" in raw or b"\\uD" in raw:
        _encodable(document)
    return document


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, whatever Python's reader allows: no backend could take them."""
    raise ValueError(f"{name} is not a JSON number")


def _encodable(value: Any, where: str = "") -> None:
    """A lone surrogate (`\\ud800`) is valid JSON text but no UTF-8 a backend can be sent: a 400 naming where it is."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise invalid(f"{where or 'the body'} holds a lone UTF-16 surrogate, which is not text", where or None) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _encodable(key, where)
            _encodable(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _encodable(item, f"{where}[{i}]")


async def _sse(opened: Opened, writer: _Writer, gateway: Gateway, done: Callable[[], None]) -> AsyncIterator[bytes]:
    """The stream's events as they come; a failure after the first chunk is one error event, then the end.

    So is a stream still open when the server's drain is about to end: it stops with an error
    the client can read, instead of a connection cut mid-answer.
    """
    try:
        for event in writer.events(opened.first):
            yield event
        async for chunk in opened.rest:
            for event in writer.events(chunk):
                yield event
            if time.monotonic() > gateway.streams_end_by:
                gateway.metrics.error(OVERLOADED)
                yield writer.failure(Problem(503, OVERLOADED, "dse serve is shutting down and its drain time is up; send the request again"))
                return
    except DseError as exc:
        problem = gateway.problem(exc)
        gateway.metrics.error(problem.kind)
        yield writer.failure(problem)
    finally:
        close = getattr(opened.rest, "aclose", None)
        if close is not None:
            await close()
        done()


def _served_headers(target: Target, backend: str | None, endpoint: str | None, attempts: int, cached: bool, clean: Callable[[str], str]) -> dict[str, str]:
    """`x-dse-*`: what served the call, where, after how many tries, and any fallback."""
    served = backend or target.backend
    headers = {
        "x-dse-backend": served,
        "x-dse-model": target.model,
        "x-dse-endpoint": clean(endpoint or ""),
        "x-dse-attempts": str(max(attempts, 1)),
        "x-dse-rule": target.rule,
    }
    if served != target.backend:
        headers["x-dse-fallback"] = f"{target.backend} -> {served}"
    if cached:
        headers["x-dse-cached"] = "true"
    return {name: _HEADER_UNSAFE.sub("?", value)[:256] for name, value in headers.items()}


_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e]")


def _json(document: Any, headers: Mapping[str, str] | None = None, status: int = 200) -> Response:
    return Response(json.dumps(document, separators=(",", ":")), status_code=status, media_type="application/json", headers=headers)


def _problem_response(problem: Problem, protocol: str) -> Response:
    headers = {"retry-after": str(max(1, min(round(problem.retry_after), 86400)))} if problem.retry_after is not None else None
    return _json(_ERROR_BODY[protocol](problem), headers, problem.status)


async def _discovered(gateway: Gateway, name: str) -> list[dict[str, Any]]:
    """What the backend's servers say they have (auto-discovery), beside what the config lists for it."""
    backend = gateway.config.backends[name]
    found = {
        model: {"id": model, "roles": sorted(r for r, m in backend.models.items() if m == model), "listed": True, "loaded": None}
        for model in backend.models.values()
    }
    if backend.unavailable is None:
        for url in gateway.health.endpoints(name):
            try:
                entries = await gateway.router.backend(name).list_models(url)
            except DseError:
                continue
            for entry in entries:
                found.setdefault(entry.name, {"id": entry.name, "roles": [], "listed": False, "loaded": None})["loaded"] = entry.loaded
            break
    return list(found.values())
