"""Patient-grouped splits never put one patient on two sides."""

from pathlib import Path

import pytest

from lib.data.records import Record
from lib.data.splits import kfold, split_train_valid
from lib.errors import DataError


def _records(patients=20, per_patient=3, distended_every=4):
    out = []
    for p in range(patients):
        for i in range(per_patient):
            label = "distended" if (p % distended_every == 0 and i == 0) else "normal"
            out.append(Record(f"p{p}_{i}", Path(f"p{p}_{i}.png"), f"p{p}", label, (0, 0, 4, 4)))
    return out


def _patients(records):
    return {r.patient_id for r in records}


def test_train_and_validation_share_no_patient_and_cover_everything():
    records = _records()
    train, valid = split_train_valid(records, 0.25, seed=3)
    assert not _patients(train) & _patients(valid)
    assert len(train) + len(valid) == len(records)
    assert len(_patients(valid)) == 5


def test_split_is_deterministic_for_a_seed():
    records = _records()
    assert split_train_valid(records, 0.2, seed=1) == split_train_valid(records, 0.2, seed=1)


def test_single_patient_goes_to_train():
    records = _records(patients=1)
    train, valid = split_train_valid(records, 0.2)
    assert len(train) == 3 and valid == []


@pytest.mark.parametrize("folds", [2, 5])
def test_kfold_test_groups_partition_patients_and_never_overlap_train_or_valid(folds):
    records = _records()
    result = kfold(records, folds=folds, seed=0)
    assert len(result) == folds
    tested = [r.image for f in result for r in f.test]
    assert sorted(tested) == sorted(r.image for r in records)
    for f in result:
        sides = [_patients(f.train), _patients(f.valid), _patients(f.test)]
        assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]
        assert len(f.train) + len(f.valid) + len(f.test) == len(records)


def test_kfold_spreads_distended_patients_over_test_folds():
    result = kfold(_records(), folds=5, seed=0)
    assert all(any(r.label == "distended" for r in f.test) for f in result)


def test_kfold_refuses_fewer_patients_than_folds():
    with pytest.raises(DataError, match="3 patients cannot make 5"):
        kfold(_records(patients=3), folds=5)
