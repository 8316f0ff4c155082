"""Mixed precision for the network's forward pass: ``float32`` (default), ``bf16`` or ``fp16`` autocast.

Under ``bf16``/``fp16`` the network runs inside :func:`torch.autocast` (convolutions and matrix
products in the lower precision, reductions kept in float32 by PyTorch); everything after it (the
loss, the anomaly maps, scores and thresholds) takes the reconstruction back to float32. ``fp16``
training scales the loss (:class:`torch.amp.GradScaler`) so that small gradients do not underflow;
``bf16`` has float32's exponent range and needs no scaling.

Meant for GPUs, where it is faster (tensor cores) and halves activation memory: ``fp16`` needs CUDA;
``bf16`` needs a GPU that supports it (Ampere or newer) or the CPU, where PyTorch also runs it (mostly
to check it; it is rarely faster there). How far the outputs move from float32 is measured by
``python -m lib bench --device cuda`` (``precision``) against :data:`TOLERANCE`.
"""

from __future__ import annotations

import contextlib

import torch

from lib.errors import DataError

PRECISIONS = ("float32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

TOLERANCE = {"reconstruction_max_abs": 0.05, "score_rel": 0.05}
"""How far a mixed-precision forward may move LoRIS's outputs from the float32 forward of the same weights
and images to count as equivalent: the reconstruction (values in ``[-1, 1]``) by at most 0.05 at any pixel
(about 6 grey levels of 255), and each image score by at most 5 % of the float32 scores' spread (their
max - min over the batch); see :func:`compare`."""


def check_precision(name: str, device: torch.device) -> str:
    """``name`` when it can run on ``device``; DataError naming the choices otherwise."""
    if name not in PRECISIONS:
        raise DataError(f"precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    if name == "fp16" and device.type != "cuda":
        raise DataError(f"precision fp16 needs a CUDA device (got {device}); use bf16 or float32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DataError(f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use fp16")
    return name


def autocast(name: str, device: torch.device):
    """The context the network's forward runs in: nothing for ``float32``, :func:`torch.autocast` otherwise."""
    if name == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[name])


class Precision:
    """One training's precision: the forward's autocast and the backward/step (with loss scaling for fp16).

    Args:
        name: of :data:`PRECISIONS`.
        device: the training device (checked with :func:`check_precision`).
    """

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = check_precision(name, device)
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        return autocast(self.name, self.device)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` then ``optimizer.step()`` (scaled for fp16; a step whose gradients overflowed
        is skipped and the scale lowered, as GradScaler does)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def stateful(self) -> dict:
        """What a checkpoint must keep for this precision (``{"grad_scaler": ...}`` for fp16, else nothing)."""
        return {"grad_scaler": self.scaler} if self.scaler is not None else {}


def compare(reference: dict, other: dict) -> dict:
    """How far ``other``'s outputs are from ``reference``'s (float32), against :data:`TOLERANCE`.

    Args:
        reference, other: ``{"reconstruction": (B, 1, S, S) tensor, "scores": {metric: (B,) tensor}}``.

    Returns:
        ``{"reconstruction_max_abs", "score_rel": {metric: max |diff| / spread}, "within_tolerance"}``.
    """
    recon = float((other["reconstruction"].float().cpu() - reference["reconstruction"].float().cpu()).abs().max())
    rel = {}
    for metric, ref in reference["scores"].items():
        ref = ref.double().cpu()
        spread = float(ref.max() - ref.min()) if ref.numel() > 1 else float(ref.abs().max())
        diff = float((other["scores"][metric].double().cpu() - ref).abs().max())
        rel[metric] = diff / spread if spread > 0 else (0.0 if diff == 0 else float("inf"))
    ok = recon <= TOLERANCE["reconstruction_max_abs"] and all(v <= TOLERANCE["score_rel"] for v in rel.values())
    return {"reconstruction_max_abs": recon, "score_rel": rel, "within_tolerance": ok}
