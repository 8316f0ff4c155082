"""How the MONAI Label layer turns the project's errors into HTTP answers.

MONAI Label 0.8.5 registers no exception handler: anything but a FastAPI
``HTTPException`` raised inside an infer task or the datastore becomes a bare
``500 Internal Server Error``. The app therefore raises ``HTTPException`` with a
4xx status and a message a clinician can act on; the server stays up and the
message reaches the client as ``{"detail": "..."}``.
"""

from __future__ import annotations

from contextlib import contextmanager

from fastapi import HTTPException

from lib.errors import DataError, ModelError, NoBoxError, NotTrainedError

BAD_REQUEST = 400
UNAUTHORIZED = 401  # no or a wrong access token
FORBIDDEN = 403  # a read-only datastore; a protected request from beyond this machine without a token configured
NOT_FOUND = 404
CONFLICT = 409  # the model is not trained yet (train it first)
PAYLOAD_TOO_LARGE = 413


def client_error(status: int, message: str) -> HTTPException:
    """An ``HTTPException`` whose ``detail`` is ``message``."""
    return HTTPException(status_code=status, detail=message)


@contextmanager
def user_errors(what: str):
    """Map :class:`DataError` to 400; :class:`NotTrainedError`, other :class:`ModelError` and :class:`NoBoxError`
    (no box given, and no detector box) to 409.

    Args:
        what: prefix of the message, e.g. ``"loris"`` (the model) or ``"datastore"``.
    """
    try:
        yield
    except HTTPException:
        raise
    except NotTrainedError as exc:
        raise client_error(CONFLICT, f"{what}: not trained yet: {exc}") from None
    except ModelError as exc:
        raise client_error(CONFLICT, f"{what}: {exc}") from None
    except NoBoxError as exc:
        raise client_error(CONFLICT, f"{what}: {exc}") from None
    except DataError as exc:
        raise client_error(BAD_REQUEST, f"{what}: {exc}") from None
