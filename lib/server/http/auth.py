"""Who may do what: the access token and which requests need it.

Requests are *open* (reads and inference: ``GET /info/``, datastore reads,
``POST /infer/<model>``, ``POST /activelearning/<strategy>``, task status) or
*protected* (everything else: training, image and label writes, model download,
upload and delete, logs, scoring and batch-infer runs, ``/reload``...). The docs and
the login endpoints are always open.

* With a token configured (:func:`lib.configs.app_config.read_auth_token`), a protected
  request, and with ``auth_scope all`` any request but the docs and login, must carry
  ``Authorization: Bearer <token>``; otherwise it gets 401.
* Without a token, protected requests are served only to clients on this machine
  (loopback); from any other address they get 403: a server that listens beyond
  localhost needs a token for them.

``GET /auth/`` and ``POST /auth/token`` follow MONAI Label's login protocol, so that
MONAI Label's own clients can log in with the token as the password:
``client.update_auth(client.auth_token("any user", TOKEN))``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re

from lib.infers.http_errors import FORBIDDEN, UNAUTHORIZED

_ALWAYS_OPEN = [
    ("GET", r"/"), ("GET", r"/docs"), ("GET", r"/openapi\.json"), ("GET", r"/favicon\.ico"), ("GET", r"/static/.*"),
    ("GET", r"/auth"), ("POST", r"/auth/token"), ("GET", r"/auth/token/valid"),
]
_OPEN = [
    ("GET", r"/info"), ("GET", r"/datastore"), ("GET", r"/datastore/(image|label)(/info)?"),
    ("POST", r"/infer/[^/]+"), ("POST", r"/activelearning/[^/]+"),
    ("GET", r"/train"), ("GET", r"/scoring"), ("GET", r"/batch/infer"),
]


def _compile(rules):
    return [(method, re.compile(pattern + r"\Z")) for method, pattern in rules]


ALWAYS_OPEN = _compile(_ALWAYS_OPEN)
OPEN = _compile(_OPEN)


def _matches(rules, method: str, path: str) -> bool:
    method = "GET" if method == "HEAD" else method  # HEAD asks what GET would answer
    return any(m == method and p.match(path) for m, p in rules)


def normalized(path: str, prefix: str = "") -> str:
    """The route path a request addresses: the API prefix and trailing slashes removed (``/`` stays)."""
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    return path.rstrip("/") or "/"


def is_loopback(host) -> bool:
    """True for 127.0.0.0/8, ``::1`` and IPv4-mapped loopback addresses."""
    try:
        ip = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class AccessPolicy:
    """Decide whether a request may proceed (see the module docstring).

    Args:
        token: the configured access token, or None.
        scope: ``"writes"`` (protected requests need the token) or ``"all"``.
        prefix: MONAI Label's API prefix (``MONAI_LABEL_API_STR``, usually empty).
    """

    def __init__(self, token: str | None, scope: str = "writes", prefix: str = ""):
        self.token = token
        self.scope = scope
        self.prefix = prefix

    def token_matches(self, presented: str | None) -> bool:
        return (self.token is not None and presented is not None
                and hmac.compare_digest(presented.encode("utf-8"), self.token.encode("utf-8")))

    def protected(self, method: str, path: str) -> bool:
        path = normalized(path, self.prefix)
        if method == "OPTIONS" or _matches(ALWAYS_OPEN, method, path):
            return False
        if self.token is not None and self.scope == "all":
            return True
        return not _matches(OPEN, method, path)

    def refusal(self, method: str, path: str, client_host, authorization: str | None) -> tuple[int, str] | None:
        """``(status, message)`` when the request must be refused, else None."""
        if not self.protected(method, path):
            return None
        if self.token is None:
            if is_loopback(client_host):
                return None
            return FORBIDDEN, (f"{method} {normalized(path, self.prefix)} is served only to clients on the server's "
                               "own machine, because the server has no access token configured; the site sets one "
                               "with LORIS_AUTH_TOKEN_FILE or --conf auth_token_file (see the README, Security)")
        presented = bearer_token(authorization)
        if presented is None:
            return UNAUTHORIZED, (f"{method} {normalized(path, self.prefix)} needs the server's access token: send "
                                  "the header 'Authorization: Bearer <token>'")
        if not self.token_matches(presented):
            return UNAUTHORIZED, "the access token is not valid for this server"
        return None


class AuthMiddleware:
    """ASGI middleware that answers a refused request itself (JSON ``{"detail": ...}``), before any routing."""

    def __init__(self, app, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        refusal = self.policy.refusal(scope["method"], scope["path"], client[0] if client else None,
                                      headers.get("authorization"))
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message = refusal
        body = json.dumps({"detail": message}).encode("utf-8")
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == UNAUTHORIZED:
            response_headers.append((b"www-authenticate", b'Bearer realm="LoRIS"'))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
