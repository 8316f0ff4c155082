"""The error types users see.

Every error raised on bad input names the file or field and the problem, so
that a command-line user or a REST client can fix it without reading code.
"""


class LorisError(Exception):
    """Base class of the project's user-facing errors."""


class DataError(LorisError, ValueError):
    """Bad input data: an unreadable image, a bad box, a malformed table..."""


class ModelError(LorisError):
    """A model directory that is missing, incomplete or from an incompatible version."""


class NotTrainedError(ModelError):
    """The model has no checkpoint yet."""


class NoBoxError(DataError):
    """No recess box: none was given, and the detector is missing or found none (see :mod:`lib.pipeline`)."""
