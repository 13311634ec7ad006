"""API keys with scopes, request-size limit and readiness, as one pure ASGI middleware.

Keys come from ``SHOPML_API_KEYS`` (``key1:storefront,key2:marketing+planning``) or from the file
named by ``SHOPML_API_KEYS_FILE`` (the same entries, one per line, ``#`` comments). A client sends
its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are compared in constant
time (SHA-256 digests with :func:`hmac.compare_digest`, every configured key checked) and never
logged.

Rules for ``/v1/...`` routes:

* keys configured: no key -> 401; unknown key -> 401; key without the route's scope -> 403.
  ``/v1/models`` and ``/v1/noop`` need any valid key.
* no keys configured: every route is open, except the customer-level routes (``churn_risk``,
  ``customer_scores``) when the service is not bound to loopback: those answer 403 with a message.
  The bind host is ``SHOPML_BIND_HOST``, else ``BENTOML_HOST`` (what ``bentoml serve --host``
  reads), else unknown, which counts as non-loopback because ``bentoml serve`` binds 0.0.0.0 by
  default. A request that arrives on a non-loopback local address also counts as non-loopback.

Other paths (``/readyz``, ``/healthz``, ``/metrics``, ``/docs.json``, ``/``) are not guarded.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCOPES = ("storefront", "marketing", "planning", "admin")
#: The scope each guarded route needs (``None``: any valid key).
ROUTE_SCOPES: dict[str, str | None] = {
    "/v1/recommend": "storefront",
    "/v1/similar_items": "storefront",
    "/v1/churn_risk": "marketing",
    "/v1/customer_scores": "marketing",
    "/v1/forecast": "planning",
    "/v1/models": None,
    "/v1/noop": None,
}
CUSTOMER_LEVEL = frozenset({"/v1/churn_risk", "/v1/customer_scores"})
DEFAULT_MAX_BODY_BYTES = 1 << 20
JSON_TYPES = ("application/json", "")

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
App = Callable[[Scope, Receive, Send], Any]


class KeyConfigError(ValueError):
    """The API key configuration is malformed (never includes the key itself)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class KeyRing:
    """Configured keys as (digest, scopes) pairs."""

    entries: tuple[tuple[bytes, frozenset[str]], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def parse(cls, text: str, source: str = "SHOPML_API_KEYS") -> KeyRing:
        """Parse ``key:scope+scope`` entries separated by commas or new lines."""
        entries: list[tuple[bytes, frozenset[str]]] = []
        chunks = [c for line in text.splitlines() for c in line.split("#", 1)[0].split(",")]
        for n, chunk in enumerate(chunks, start=1):
            chunk = chunk.strip()
            if not chunk:
                continue
            key, sep, scopes_text = chunk.rpartition(":")
            if not sep or not key.strip():
                raise KeyConfigError(
                    f"{source}: entry {n} is not 'key:scope[+scope...]' (scopes: {SCOPES})"
                )
            scopes = frozenset(s.strip() for s in scopes_text.split("+") if s.strip())
            unknown = sorted(scopes - set(SCOPES))
            if not scopes or unknown:
                raise KeyConfigError(
                    f"{source}: entry {n} has unknown or no scopes {unknown}; expected {SCOPES}"
                )
            entries.append((_digest(key.strip()), scopes))
        return cls(tuple(entries))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyRing:
        """Keys from ``SHOPML_API_KEYS`` and/or the file in ``SHOPML_API_KEYS_FILE``."""
        env = os.environ if env is None else env
        ring = cls.parse(env.get("SHOPML_API_KEYS", ""))
        path = env.get("SHOPML_API_KEYS_FILE", "")
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise KeyConfigError(f"SHOPML_API_KEYS_FILE: cannot read {path}: {exc}") from exc
            ring = cls(ring.entries + cls.parse(text, source=path).entries)
        return ring

    def scopes_of(self, key: str) -> frozenset[str] | None:
        """The scopes of ``key`` or ``None``; checks every entry in constant time per entry."""
        probe = _digest(key)
        found: frozenset[str] | None = None
        for digest, scopes in self.entries:
            if hmac.compare_digest(probe, digest) and found is None:
                found = scopes
        return found


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything else or unknown."""
    if not host:
        return False
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_host_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The declared bind host: ``SHOPML_BIND_HOST``, else ``BENTOML_HOST``, else ``None``."""
    env = os.environ if env is None else env
    return env.get("SHOPML_BIND_HOST") or env.get("BENTOML_HOST") or None


@dataclass
class Readiness:
    """Shared between the service instance (writes) and the middleware (reads ``/readyz``)."""

    loaded: bool = False
    models: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    #: kind -> why its newest version failed to load and which older one is served instead
    fallbacks: dict[str, str] = field(default_factory=dict)

    def ready(self) -> bool:
        return self.loaded and all(k in self.models for k in self.required)

    def body(self) -> dict[str, Any]:
        return {
            "ready": self.ready(),
            "models": self.models,
            "missing": self.missing,
            "required": list(self.required),
            "fallbacks": self.fallbacks,
        }


READINESS = Readiness()


async def send_json(
    send: Send,
    status: int,
    payload: Mapping[str, Any],
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send one complete JSON response (``headers``: extra raw header pairs)."""
    body = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _presented_key(scope: Scope) -> str | None:
    auth = _header(scope, b"authorization")
    if auth:
        kind, _, token = auth.partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return token.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


class ApiGuard:
    """ASGI middleware: readiness, body-size limit, content type, API keys and scopes."""

    def __init__(
        self,
        app: App,
        *,
        readiness: Readiness = READINESS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.readiness = readiness
        self.fixed_env = env
        self.configure(os.environ if env is None else env)

    def configure(self, env: Mapping[str, str]) -> None:
        """(Re)read keys, bind host and body limit; runs at every ASGI start-up (lifespan)."""
        self.keys = KeyRing.from_env(env)
        self.bind_host = bind_host_from_env(env)
        self.bind_loopback = is_loopback(self.bind_host)
        self.max_body = int(env.get("SHOPML_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))
        if self.keys.enabled:
            log.info("API keys: %d configured; /v1 routes need a key", len(self.keys.entries))
        elif not self.bind_loopback:
            log.warning(
                "no API keys and bind host %s is not loopback: churn_risk and customer_scores "
                "are refused (set SHOPML_API_KEYS or bind to 127.0.0.1 with SHOPML_BIND_HOST)",
                self.bind_host or "unknown (bentoml default 0.0.0.0)",
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.fixed_env is None:
                self.configure(os.environ)
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if path in ("/readyz", "/v1/readyz"):
            ok = self.readiness.ready()
            await send_json(send, 200 if ok else 503, self.readiness.body())
            return
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, path)
        if refusal is not None:
            await send_json(send, refusal[0], {"error": refusal[1]})
            return
        if scope.get("method") == "POST":
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype not in JSON_TYPES:
                await send_json(
                    send, 415, {"error": f"content-type {ctype!r} not supported; send JSON"}
                )
                return
            length = _header(scope, b"content-length")
            if length is not None:
                if not length.isdigit():
                    await send_json(send, 400, {"error": "invalid content-length header"})
                    return
                if int(length) > self.max_body:
                    await send_json(send, 413, self._too_large())
                    return
            else:
                buffered = await self._buffered(receive, send)
                if buffered is None:
                    return
                receive = buffered
        await self.app(scope, receive, send)

    def _too_large(self) -> dict[str, str]:
        return {"error": f"request body larger than {self.max_body} bytes", "field": "body"}

    async def _buffered(self, receive: Receive, send: Send) -> Receive | None:
        """Read a body without content-length up to the limit; replay it to the app."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_json(send, 413, self._too_large())
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        return replay

    def _refusal(self, scope: Scope, path: str) -> tuple[int, str] | None:
        """(status, message) when the request may not pass, else ``None``."""
        if path not in ROUTE_SCOPES:
            return None  # starlette answers 404
        needed = ROUTE_SCOPES[path]
        if self.keys.enabled:
            key = _presented_key(scope)
            if key is None:
                return 401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            scopes = self.keys.scopes_of(key)
            if scopes is None:
                return 401, "invalid API key"
            if needed is not None and needed not in scopes and "admin" not in scopes:
                return 403, f"this API key lacks the '{needed}' scope needed for {path}"
            return None
        if path in CUSTOMER_LEVEL:
            server = scope.get("server") or (None, None)
            if not self.bind_loopback or not is_loopback(str(server[0])):
                return 403, (
                    f"{path} returns customer-level data and the service is not bound to a "
                    "loopback address; configure API keys (SHOPML_API_KEYS or "
                    "SHOPML_API_KEYS_FILE) or bind to 127.0.0.1 (SHOPML_BIND_HOST=127.0.0.1)"
                )
        return None


def scopes_help(routes: Iterable[str] = ROUTE_SCOPES) -> dict[str, str]:
    """Route -> scope needed (for docs and the CLI)."""
    return {r: ROUTE_SCOPES[r] or "any key" for r in routes}
