"""Patient-grouped splits: no patient ever has images on two sides of a split."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from lib.data.records import Record
from lib.errors import DataError


@dataclass
class Fold:
    """One cross-validation fold. Every list holds all classes; trainers keep the normal images."""

    index: int
    train: list[Record] = field(default_factory=list)
    valid: list[Record] = field(default_factory=list)
    test: list[Record] = field(default_factory=list)


def _patients(records: list[Record], seed: int) -> list[str]:
    # Shuffle patients in a stratified way: patients with a distended image are
    # spread evenly, so every fold gets some positives when there are enough.
    by_patient: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_patient[r.patient_id].append(r)
    rng = np.random.default_rng(seed)
    names = sorted(by_patient)
    rng.shuffle(names)
    positive = [p for p in names if any(r.label == "distended" for r in by_patient[p])]
    negative = [p for p in names if p not in set(positive)]
    return positive + negative


def _records_of(records: list[Record], patients: set[str]) -> list[Record]:
    return [r for r in records if r.patient_id in patients]


def split_train_valid(records: list[Record], valid_fraction: float = 0.2, seed: int = 0) -> tuple[list[Record], list[Record]]:
    """Split records into train and validation by patient (about ``valid_fraction`` of patients to validation).

    With a single patient everything goes to train and validation is empty.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    order = _patients(records, seed)
    # Round-robin assignment keeps the share of distended patients similar on both sides.
    n_valid = int(round(len(order) * valid_fraction))
    if len(order) > 1:
        n_valid = min(max(n_valid, 1 if valid_fraction > 0 else 0), len(order) - 1)
    step = len(order) / n_valid if n_valid else 0
    valid_patients = {order[int(i * step)] for i in range(n_valid)}
    train = [r for r in records if r.patient_id not in valid_patients]
    valid = _records_of(records, valid_patients)
    return train, valid


def kfold(records: list[Record], folds: int = 5, seed: int = 0, valid_fraction: float = 0.2) -> list[Fold]:
    """Patient-grouped K-fold cross-validation.

    Patients are dealt to ``folds`` test groups (distended patients spread evenly);
    for fold ``k`` the other groups are split again by patient into train and
    validation (``valid_fraction`` of their patients).

    Raises:
        DataError: fewer patients than folds.
    """
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    order = _patients(records, seed)
    if len(order) < folds:
        raise DataError(f"{len(order)} patients cannot make {folds} patient-grouped folds")
    groups = [set(order[k::folds]) for k in range(folds)]
    out = []
    for k in range(folds):
        rest = [r for r in records if r.patient_id not in groups[k]]
        train, valid = split_train_valid(rest, valid_fraction, seed + k + 1)
        out.append(Fold(index=k, train=train, valid=valid, test=_records_of(records, groups[k])))
    return out
