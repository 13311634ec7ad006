"""Request-validation 400s that name the field in their message, like every other client error.

BentoML answers a body that fails its pydantic model with
``{"error": "1 validation error for RecommendRequest", "detail": [...]}``: the message names the
model, not the field, and a client showing ``error`` says nothing useful. :class:`FieldErrors`
rewrites those bodies to ``{"error": "k: Input should be less than or equal to 100",
"field": "k", "detail": [...]}`` (``detail`` unchanged), the shape of the service's other errors.
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


class FieldErrors:
    """ASGI middleware: rewrites the 400 answers of ``/v1/`` routes with :func:`field_message`."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 400:
                start = message  # held until the body is complete
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _rewritten(b"".join(chunks))
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
