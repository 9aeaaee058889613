"""Which configured values are secrets: the values no output, journal, log or error may show.

A value is a secret when it is an `api_key`, a header value (every header that came from
`${VAR}`, and any literal one whose name says it carries credentials), the user, password or
query values of a URL, or the value of a `${VAR}` whose name says it is one (`*KEY*`, `*TOKEN*`,
`*SECRET*`, `*PASSWORD*`...), wherever it is used. Values shorter than `MIN_LENGTH` are left
out: scrubbing them would erase ordinary words, and no real credential is that short.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from .env import Substitution
from .model import BackendConfig
from .schema import is_secret_key

MIN_LENGTH = 8
_SECRET_NAME = re.compile(r"key|token|secret|passw|credential|auth", re.I)


def secret_values(substituted: Iterable[Substitution], backends: Iterable[BackendConfig], keys: Iterable[str] = ()) -> frozenset[str]:
    """`keys` are the gateway's own (`serve.api_keys`), secrets wherever they were written."""
    found: set[str] = set(keys)
    for sub in substituted:
        if _SECRET_NAME.search(sub.name) or "headers" in sub.path or any(is_secret_key(part) for part in sub.path):
            found.add(sub.value)
    for backend in backends:
        if backend.api_key:
            found.add(backend.api_key.reveal())
        for name, value in backend.headers.items():
            if is_secret_key(name):
                found.update({value, value.partition(" ")[2]})
        for url in _urls(backend):
            found.update(url_secrets(url))
    return frozenset(value for value in found if len(value) >= MIN_LENGTH)


def url_secrets(url: str) -> set[str]:
    """The user, password and query values of a URL, as written and decoded, and the Basic credentials HTTP makes of them.

    A server that echoes the request's `Authorization: Basic ...` header in an error would
    otherwise hand the password back in base64.
    """
    try:
        parts = urlsplit(url)
        values = [parts.username or "", parts.password or "", *(v for _, v in parse_qsl(parts.query))]
    except ValueError:
        return set()
    found = {form for value in values if value for form in (value, unquote(value))}
    if parts.password:
        found.add(base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password)}".encode()).decode())
    return found


def _urls(backend: BackendConfig) -> list[str]:
    urls = [backend.base_url, backend.endpoint, *(d.endpoint for d in backend.deployments.values())]
    urls += [e.url for endpoints in backend.endpoints.values() for e in endpoints]
    return [url for url in urls if url]
