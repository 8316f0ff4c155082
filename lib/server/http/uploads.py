"""Uploaded files, held only while a request needs them.

MONAI Label's own routes copy every upload to a named file in the system temporary
folder and delete it in a background task that runs only after a successful answer,
so each refused upload stayed on disk. Here an upload is copied (with a byte limit)
into the datastore's hidden ``.uploads`` folder under a random name that keeps its
extension, and deleted when the request ends, whatever the answer; the server also
empties that folder when it starts.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from lib.infers.http_errors import BAD_REQUEST, PAYLOAD_TOO_LARGE, client_error

CHUNK_BYTES = 1024 * 1024


def upload_extension(filename: str | None, extensions: Sequence[str], field: str) -> str:
    """The upload's extension among ``extensions`` (case-insensitive, as written), else an HTTP 400."""
    name = Path(filename or "").name
    lower = name.lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if lower.endswith(ext):
            return name[len(name) - len(ext):]
    raise client_error(BAD_REQUEST, f"{field}: file {name!r} has an unsupported type; valid types are "
                                    f"{', '.join(extensions)}")


@contextmanager
def received(upload, folder: Path, field: str, extensions: Sequence[str], max_bytes: int) -> Iterator[Path]:
    """Copy a FastAPI ``UploadFile`` into ``folder`` and yield its path; the file is deleted on exit.

    Raises:
        HTTPException: 400 unsupported extension, 413 more than ``max_bytes`` bytes.
    """
    ext = upload_extension(upload.filename, extensions, field)
    path = Path(folder) / f"{uuid.uuid4().hex}{ext}"
    try:
        copied = 0
        with open(path, "xb") as out:
            while chunk := upload.file.read(CHUNK_BYTES):
                copied += len(chunk)
                if copied > max_bytes:
                    raise client_error(PAYLOAD_TOO_LARGE, f"{field}: the file is over the limit of {max_bytes} bytes")
                out.write(chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)
