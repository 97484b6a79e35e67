"""DetectionSet: subsets, seeded hold-out splits, label <-> category id mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multibox.data.records import DetectionSet, ImageRecord


def _set(n: int) -> DetectionSet:
    records = [
        ImageRecord(
            image_id=100 + i,
            file=Path(f"/x/{i}.jpg"),
            width=10,
            height=10,
            boxes=[[0, 0, 2, 3]],
            labels=[1 + i % 2],
            iscrowd=[False],
        )
        for i in range(n)
    ]
    return DetectionSet(records=records, class_names=["cat", "dog"], category_ids=[17, 18])


def test_record_defaults_and_dtypes() -> None:
    record = _set(1).records[0]
    assert record.boxes.dtype == np.float32 and record.boxes.shape == (1, 4)
    assert record.labels.dtype == np.int64 and record.iscrowd.dtype == bool
    np.testing.assert_array_equal(record.areas, [6.0])  # box area when the source has none
    empty = ImageRecord(image_id=1, file=Path("/a.jpg"), width=5, height=5)
    assert empty.boxes.shape == (0, 4) and empty.areas.shape == (0,)
    with pytest.raises(ValueError):
        ImageRecord(image_id=1, file=Path("/a.jpg"), width=5, height=5, boxes=[[0, 0, 1, 1]], labels=[], iscrowd=[])


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"), [(10, 0.2, 2), (10, 0.25, 2), (3, 0.1, 1), (2, 0.9, 1), (5, 0.0, 0), (1, 0.5, 0)]
)
def test_split_sizes(n: int, fraction: float, n_val: int) -> None:
    train, val = _set(n).split(fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val


def test_split_is_seeded_and_disjoint() -> None:
    data = _set(50)
    train, val = data.split(0.3, seed=4)
    again_train, again_val = data.split(0.3, seed=4)
    _, other_val = data.split(0.3, seed=5)
    ids = lambda d: [r.image_id for r in d.records]  # noqa: E731
    assert ids(val) == ids(again_val) and ids(train) == ids(again_train)
    assert ids(val) != ids(other_val)
    assert not set(ids(train)) & set(ids(val))
    assert sorted(ids(train) + ids(val)) == ids(data)
    assert ids(val) == sorted(ids(val))  # original order kept
    assert val.class_names == data.class_names and val.category_ids == data.category_ids


def test_subset_and_category_ids() -> None:
    data = _set(4)
    assert [r.image_id for r in data.subset([3, 1]).records] == [103, 101]
    assert data.num_classes == 2
    np.testing.assert_array_equal(data.category_id_of(np.array([2, 1, 2])), [18, 17, 18])
    assert data.category_id_of(np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError):
        data.category_id_of(np.array([0]))  # background has no category
    with pytest.raises(ValueError):
        data.category_id_of(np.array([3]))
