"""Random generators seen as checkpointable objects (``state_dict`` / ``load_state_dict``).

:func:`lib.training.loop.fit` saves and restores every object of its ``stateful``
dict with the training checkpoint; these wrappers put a model's random draws there,
so that a resumed training draws what the uninterrupted one would have drawn. Their
states hold only tensors and plain numbers, as ``torch.load(weights_only=True)``
requires.
"""

from __future__ import annotations

import numpy as np
import torch


class TorchGenerator:
    """A ``torch.Generator``: its state, a byte tensor."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class TorchGlobal:
    """PyTorch's global CPU generator (``torch.manual_seed``'s)."""

    def state_dict(self) -> torch.Tensor:
        return torch.get_rng_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        torch.set_rng_state(state)


class NumpyGenerator:
    """A ``numpy.random.Generator`` (its bit generator's state: a dict of numbers)."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict:
        return self.generator.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.generator.bit_generator.state = state


def random_state_to_dict(state: np.random.RandomState) -> dict:
    """A legacy ``numpy.random.RandomState`` (MONAI's randomizable transforms draw from one) as plain numbers."""
    name, keys, pos, has_gauss, cached = state.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def random_state_from_dict(state: np.random.RandomState, saved: dict) -> None:
    """Restore what :func:`random_state_to_dict` saved into ``state``."""
    state.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                     saved["cached_gaussian"]))
