"""Which device a training or an inference runs on."""

from __future__ import annotations

import torch

from lib.errors import DataError


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """``"auto"``/None -> CUDA when available else CPU; otherwise ``torch.device(device)`` (checked)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DataError(f"device {device!r}: expected cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev
