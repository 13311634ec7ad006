"""Request-validation 400s that name the field in their message, like every other client error.

BentoML answers a body that fails its pydantic model with
``{"error": "1 validation error for RecommendRequest", "detail": [...]}``: the message names the
model, not the field, and a client showing ``error`` says nothing useful. :class:`FieldErrors`
rewrites those bodies to ``{"error": "k: Input should be less than or equal to 100",
"field": "k", "detail": [...]}`` (``detail`` unchanged), the shape of the service's other errors.
Starlette's plain-text ``Not Found`` / ``Method Not Allowed`` for a ``/v1/`` path become the same
JSON shape, naming the route and method (``{"error": "no endpoint POST /v1/recomend; ...",
"field": null}``); JSON 404s of the handlers (unknown item) are left as they are.
"""

from __future__ import annotations

import json
import re
from typing import Any

from serving.auth import App, Receive, Scope, Send

_BENTOML_VALIDATION = re.compile(r"^\d+ validation errors? for ")


def field_message(body: Any) -> dict[str, Any] | None:
    """``body`` with ``error`` and ``field`` naming its first failing field, or ``None`` when it
    is not a BentoML validation error."""
    if not isinstance(body, dict) or not _BENTOML_VALIDATION.match(str(body.get("error", ""))):
        return None
    detail = body.get("detail")
    if not isinstance(detail, list) or not detail or not isinstance(detail[0], dict):
        return None
    loc = [str(part) for part in detail[0].get("loc") or ()]
    message = str(detail[0].get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
    where = ".".join(loc) or "body"
    return {
        "error": f"{where}: {message}{more}",
        "field": loc[0] if loc else "body",
        "detail": detail,
    }


def _rewritten(raw: bytes) -> bytes:
    try:
        fixed = field_message(json.loads(raw))
    except ValueError:
        return raw
    return raw if fixed is None else json.dumps(fixed).encode()


#: Statuses whose answer :class:`FieldErrors` may rewrite.
REWRITTEN = (400, 404, 405)


def route_message(status: int, method: str, path: str, allow: str | None) -> dict[str, Any]:
    """The JSON body for Starlette's plain-text 404/405 of a ``/v1/`` path."""
    if status == 405:
        allowed = allow or "POST"
        text = f"{path} takes {allowed} with a JSON body, not {method}"
    else:
        text = f"no endpoint {method} {path}; the routes are listed at /docs.json"
    return {"error": text, "field": None}


class FieldErrors:
    """ASGI middleware: rewrites the 400 answers of ``/v1/`` routes with :func:`field_message`
    and their plain-text 404/405 with :func:`route_message`."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] in REWRITTEN:
                start = message  # held until the body is complete
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            status = start["status"]
            is_json = any(k.lower() == b"content-type" and b"json" in v.lower() for k, v in headers)
            if status == 400:
                body = _rewritten(body)
            elif not is_json:  # Starlette's plain-text routing errors
                allow = next(
                    (v.decode("latin-1") for k, v in headers if k.lower() == b"allow"), None
                )
                method, path = str(scope.get("method", "")), str(scope.get("path", ""))
                body = json.dumps(route_message(status, method, path, allow)).encode()
                headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
                headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
