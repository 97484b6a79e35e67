"""DetectionDataModule: classes known on construction, seeded disjoint hold-out, loaders, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multibox.config import parse_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.synth import SHAPES
from multibox.errors import MultiboxError


def _config(synth_dir: Path, **data: object):
    train = {"images": str(synth_dir / "images"), "annotations": str(synth_dir / "annotations.json")}
    raw = {"data": {"train": train, "input_size": [64, 96], "batch_size": 4, "num_workers": 0, **data}}
    return parse_config(raw)


def test_classes_available_after_construction(synth_dir: Path) -> None:
    module = DetectionDataModule(_config(synth_dir))
    assert module.class_names == list(SHAPES) and module.category_ids == [1, 2, 3, 4, 5]
    assert module.num_classes == 5 and module.val_set is None
    assert module.val_dataloader() == []
    batch = next(iter(module.train_dataloader()))
    assert batch["images"].shape == (4, 3, 64, 96)


def test_val_split_is_seeded_and_disjoint(synth_dir: Path) -> None:
    ids = lambda s: [r.image_id for r in s.records]  # noqa: E731
    first = DetectionDataModule(_config(synth_dir, val_split=0.3, split_seed=7))
    again = DetectionDataModule(_config(synth_dir, val_split=0.3, split_seed=7))
    other = DetectionDataModule(_config(synth_dir, val_split=0.3, split_seed=8))
    assert len(first.val_set) == 3 and len(first.train_set) == 7
    assert ids(first.val_set) == ids(again.val_set) and ids(first.val_set) != ids(other.val_set)
    assert not set(ids(first.val_set)) & set(ids(first.train_set))
    val_batches = list(first.val_dataloader())
    assert sum(len(b["image_ids"]) for b in val_batches) == 3
    assert sorted(torch.cat([b["image_ids"] for b in val_batches]).tolist()) == sorted(ids(first.val_set))
    assert first.val_set.to_coco_gt()["images"][0]["id"] in ids(first.val_set)


def test_explicit_val_set_wins_over_split(synth_dir: Path) -> None:
    val = {"images": str(synth_dir / "images"), "annotations": str(synth_dir / "annotations.json")}
    module = DetectionDataModule(_config(synth_dir, val=val, val_split=0.5))
    assert len(module.train_set) == 10 and len(module.val_set) == 10


def test_loader_settings(synth_dir: Path) -> None:
    module = DetectionDataModule(_config(synth_dir, num_workers=2, val_split=0.2))
    train, val = module.train_dataloader(), module.val_dataloader()
    # Train workers restart each epoch so their augmentation streams follow the resumable RNG state.
    assert not train.persistent_workers and val.persistent_workers
    # 8 train images > batch size: the remainder is dropped (a batch of one breaks BatchNorm); val keeps every image.
    assert train.drop_last and not val.drop_last
    assert isinstance(train.sampler, torch.utils.data.RandomSampler)
    assert isinstance(val.sampler, torch.utils.data.SequentialSampler)


def test_workers_augment_differently(tmp_path: Path, synth_dir: Path) -> None:
    # Two workers, each handed the same image: forked copies of one random state would match.
    module = DetectionDataModule(_config(synth_dir, num_workers=2, batch_size=1))
    module.train_set = module.train_set.subset([0, 0, 0, 0])
    loader = module.train_dataloader()
    images = [batch["images"] for batch in loader]
    assert len({image.numpy().tobytes() for image in images}) == 4


def test_ddp_ranks_without_workers_augment_differently(synth_dir: Path, monkeypatch) -> None:
    # num_workers=0 under DDP: every rank's main process starts from the same torch seed; the rank must
    # enter the augmentation seed, or all ranks would augment their (different) images with one stream.
    def first_images(rank: int) -> bytes:
        monkeypatch.setenv("RANK", str(rank))
        torch.manual_seed(0)
        module = DetectionDataModule(_config(synth_dir, batch_size=1))
        module.train_set = module.train_set.subset([0, 0])
        return b"".join(batch["images"].numpy().tobytes() for batch in module.train_dataloader())

    assert first_images(0) == first_images(0)  # repeatable per rank
    assert first_images(0) != first_images(1)


def test_config_errors(tmp_path: Path, synth_dir: Path) -> None:
    with pytest.raises(MultiboxError, match="data.train is required"):
        DetectionDataModule(parse_config({}))
    with pytest.raises(MultiboxError, match="data.train.annotations is required"):
        DetectionDataModule(parse_config({"data": {"train": {"images": str(synth_dir / "images")}}}))
    wrong = tmp_path / "ann.json"
    text = (synth_dir / "annotations.json").read_text().replace('"name": "star"', '"name": "hexagon"')
    wrong.write_text(text)
    val = {"images": str(synth_dir / "images"), "annotations": str(wrong)}
    module = DetectionDataModule(_config(synth_dir, val=val))  # same ids, a renamed class: ids decide
    assert module.class_names[-1] == "star"
    coco = json.loads(text)
    coco["categories"][-1]["id"] = 6
    for ann in coco["annotations"]:
        ann["category_id"] = 6 if ann["category_id"] == 5 else ann["category_id"]
    wrong.write_text(json.dumps(coco))
    with pytest.raises(MultiboxError, match="categories differ"):
        DetectionDataModule(_config(synth_dir, val=val))
