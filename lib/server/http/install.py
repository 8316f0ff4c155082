"""Wire the HTTP layer into MONAI Label's running FastAPI app (``monailabel.app.app``).

MONAI Label creates its FastAPI app, with its routes and a CORS middleware that
allows every origin with credentials, before it loads this app; the app then calls
:func:`install` from ``server_mode(True)``, inside the server's start-up. ``install``

1. puts the routes of :mod:`lib.server.http.routes` before MONAI Label's: a request is
   served by the first route that matches its path and method, so these replace the
   stock routes of the same path and method, and answer 404 for the features this app
   cannot serve safely: whole-slide inference (``/infer/wsi*``), the DICOMweb proxy
   (``/proxy/``) and the OHIF viewer that needs it (``/ohif/``);
2. maps MONAI Label's own exceptions for bad input to 400/404;
3. rebuilds the middleware stack (Starlette's ``build_middleware_stack``) with, from the
   outside in: CORS limited to the configured origins (none by default; no credentials),
   :class:`~lib.server.http.middleware.PathScrubber`, :class:`~lib.server.http.auth.AuthMiddleware`
   and :class:`~lib.server.http.middleware.BodyLimit`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from lib.server.http.auth import AccessPolicy, AuthMiddleware
from lib.server.http.middleware import FORM_OVERHEAD_BYTES, BodyLimit, PathScrubber
from lib.server.http.routes import ROUTERS, auth_router
from lib.infers.http_errors import BAD_REQUEST, NOT_FOUND

logger = logging.getLogger(__name__)

CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type"]


async def _monai_label_error(request, exc):
    from monailabel.interfaces.exception import (ImageNotFoundException, LabelNotFoundException,
                                                 MONAILabelError)

    if isinstance(exc, (ImageNotFoundException, LabelNotFoundException)):
        status = NOT_FOUND
    elif exc.error == MONAILabelError.INVALID_INPUT:
        status = BAD_REQUEST
    else:
        status = 500
    return JSONResponse({"detail": str(exc.msg)}, status_code=status)


def folders_to_hide(loris_app) -> list[tuple[str, str]]:
    """The server folders that answers must not name, with the neutral name each becomes."""
    config = loris_app.app_config
    folders = [
        (getattr(loris_app, "datastore_root", loris_app.studies), "<datastore>"), (config.models_dir, "<models>"),
        (loris_app.app_dir, "<app>"),
        (Path(loris_app.app_dir).parent, "<server>"), (tempfile.gettempdir(), "<tmp>"), (sys.prefix, "<python>"),
        (sys.base_prefix, "<python>"), (Path.home(), "<home>"), (os.getcwd(), "<server>"),
    ]
    out = []
    for folder, name in folders:
        for variant in {str(folder), os.path.realpath(folder)}:
            if variant not in ("", "/"):
                out.append((variant, name))
    return out


def install(app: FastAPI, loris_app) -> None:
    """Add the HTTP layer to ``app`` (see the module docstring); a second call does nothing."""
    from monailabel.config import settings
    from monailabel.interfaces.exception import MONAILabelException

    if getattr(app.state, "loris_http_layer", False):
        return
    config = loris_app.app_config
    prefix = settings.MONAI_LABEL_API_STR or ""

    routers = [r for r in ROUTERS if not (r is auth_router and settings.MONAI_LABEL_AUTH_ENABLE)]
    before = len(app.router.routes)
    for router in routers:
        app.include_router(router, prefix=prefix)
    ours = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = ours  # matched first: the first full match of path and method serves a request
    app.openapi_schema = None

    app.exception_handlers[MONAILabelException] = _monai_label_error

    origins = list(config.cors_origins) or [str(o).rstrip("/") for o in settings.MONAI_LABEL_CORS_ORIGINS]
    limits = config.limits

    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith(prefix + "/model/"):
            return config.max_model_bytes, "--conf max_model_bytes"
        return limits.max_bytes + FORM_OVERHEAD_BYTES, "--conf max_upload_bytes"

    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not CORSMiddleware]
    app.user_middleware[0:0] = [
        Middleware(CORSMiddleware, allow_origins=origins, allow_credentials=False, allow_methods=CORS_METHODS,
                   allow_headers=CORS_HEADERS),
        Middleware(PathScrubber, roots=folders_to_hide(loris_app)),
        Middleware(AuthMiddleware, policy=AccessPolicy(config.auth_token, config.auth_scope, prefix)),
        Middleware(BodyLimit, limit_for=limit_for),
    ]
    app.middleware_stack = app.build_middleware_stack()
    app.state.loris_http_layer = True
    logger.info(f"HTTP layer: access token {'configured' if config.auth_token else 'not configured'} "
                f"(scope {config.auth_scope}); CORS origins {origins or 'none'}")
