"""ASGI middleware of the HTTP layer: request body limits and answers free of server paths."""

from __future__ import annotations

import json
import re
from typing import Callable, Iterable

from starlette.exceptions import HTTPException

from lib.infers.http_errors import PAYLOAD_TOO_LARGE

FORM_OVERHEAD_BYTES = 1024 * 1024
"""Room for the multipart framing and the ``params`` field on top of an upload's own byte limit."""


def _json_response(status: int, detail: str):
    body = json.dumps({"detail": detail}).encode("utf-8")
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


class BodyLimit:
    """Refuse a request body larger than ``limit_for(path)`` bytes with 413, before reading it when declared.

    A declared ``Content-Length`` over the limit is answered at once; a chunked body is
    counted while the route reads it and stops with 413 as soon as it passes the limit.
    """

    def __init__(self, app, limit_for: Callable[[str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, setting = self.limit_for(scope["path"])
        message = f"the request body is over the limit of {limit} bytes ({setting})"
        declared = None
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > limit:
            start, body = _json_response(PAYLOAD_TOO_LARGE, message)
            await send(start)
            await send(body)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    raise HTTPException(status_code=PAYLOAD_TOO_LARGE, detail=message)
            return event

        await self.app(scope, limited_receive, send)


class PathScrubber:
    """Replace the server's absolute folders by neutral names (``<datastore>``...) in JSON and text answers.

    A net under the routes, which already answer without paths: MONAI Label's own
    messages and task logs (``GET /train/`` details) can name files.

    Args:
        roots: ``(absolute folder, replacement)`` pairs; longer folders are replaced first.
    """

    TYPES = (b"application/json", b"text/plain")

    def __init__(self, app, roots: Iterable[tuple[str, str]]):
        self.app = app
        pairs = sorted({(r.rstrip("/"), name) for r, name in roots if r and r.rstrip("/")}, key=lambda p: -len(p[0]))
        self._names = dict(pairs)
        self._pattern = (re.compile("|".join(re.escape(r) for r, _ in pairs) + r"(?=[/\"'\s,;:)\]}<>]|$)")
                         if pairs else None)

    def scrub(self, text: str) -> str:
        return self._pattern.sub(lambda m: self._names[m.group(0)], text) if self._pattern else text

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._pattern is None:
            return await self.app(scope, receive, send)
        held: dict = {}
        chunks: list[bytes] = []

        async def scrubbing_send(event):
            if event["type"] == "http.response.start":
                content_type = dict((k.lower(), v) for k, v in event.get("headers", [])).get(b"content-type", b"")
                if content_type.split(b";")[0].strip() in self.TYPES:
                    held["start"] = event
                    return
                return await send(event)
            if event["type"] == "http.response.body" and "start" in held:
                chunks.append(event.get("body", b""))
                if event.get("more_body", False):
                    return
                body = self.scrub(b"".join(chunks).decode("utf-8", errors="replace")).encode("utf-8")
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                return await send({"type": "http.response.body", "body": body})
            return await send(event)

        await self.app(scope, receive, scrubbing_send)
