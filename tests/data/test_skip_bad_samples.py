"""A bad sample met in training (unreadable image, invalid box) is skipped, warned about once and counted."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from multibox.config import load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.dataset import DetectionDataset, SkippedSample, collate_detections
from multibox.data.formats.coco import load_coco
from multibox.data.synth import make_synthetic_dataset
from multibox.data.transforms import build_eval_transform
from multibox.engine.module import DetectionModule

TINY = [
    "model.name=ssdlite320_mobilenet_v3_large",
    "model.width_mult=0.5",
    "data.input_size=[64,64]",
    "data.num_workers=0",
    "data.batch_size=2",
    "train.accelerator=cpu",
    "optimizer.name=adamw",
    "optimizer.lr=0.001",
]


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    """4 images of 64x64: 000000.jpg and 000001.jpg unreadable, the last image has a box outside the image."""
    root = make_synthetic_dataset(tmp_path / "d", 4, (64, 64), seed=2)
    for name in ("000000.jpg", "000001.jpg"):
        (root / "images" / name).write_bytes(b"not a jpeg")
    coco = json.loads((root / "annotations.json").read_text())
    coco["annotations"].append(
        {"id": 999, "image_id": 4, "category_id": 1, "bbox": [70, 70, 5, 5], "area": 25, "iscrowd": 0}
    )
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def _trainer(**kwargs) -> L.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def test_bad_samples_become_markers_warned_once_per_file(corrupt: Path) -> None:
    data = load_coco(corrupt / "images", corrupt / "annotations.json")
    dataset = DetectionDataset(data, build_eval_transform((64, 64)), (64, 64), skip_bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[i] for i in range(4)] + [dataset[0], dataset[3]]
    assert [isinstance(item, SkippedSample) for item in items] == [True, True, False, True, True, True]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3  # once per file, not once per access
    assert any("000000.jpg" in m and "cannot read image" in m for m in messages)
    assert any("000003.jpg" in m and "outside" in m for m in messages)

    batch = collate_detections(items[1:3], input_size=(64, 64))
    assert int(batch["skipped"]) == 1 and batch["images"].shape == (1, 3, 64, 64)
    assert "000001.jpg" in batch["skipped_files"][0]
    empty = collate_detections([items[0], items[1], None], input_size=(64, 64))
    assert int(empty["skipped"]) == 3 and empty["images"].shape == (0, 3, 64, 64) and empty["boxes"].shape == (0, 1, 4)
    with pytest.raises(Exception, match="cannot read image"):  # the default stays strict
        DetectionDataset(data, build_eval_transform((64, 64)), (64, 64))[0]


def test_a_fully_skipped_batch_skips_the_step_and_the_count_is_logged(corrupt: Path, one_thread) -> None:
    config = load_config(
        None,
        [
            *TINY,
            "data.max_skipped_fraction=1",
            f"data.train.images={corrupt / 'images'}",
            f"data.train.annotations={corrupt / 'annotations.json'}",
        ],
    )
    data = DetectionDataModule(config)
    module = DetectionModule(config.to_dict(), data.class_names, data.category_ids)
    dataset = DetectionDataset(data.train_set, build_eval_transform((64, 64)), (64, 64), skip_bad=True)
    # No shuffle: batch 0 is both unreadable images (step skipped), batch 1 one good image and one bad box.
    loader = DataLoader(dataset, batch_size=2, collate_fn=lambda b: collate_detections(b, (64, 64)))
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = _trainer()
    with pytest.warns(UserWarning, match="skipped"):
        trainer.fit(module, train_dataloaders=loader)
    assert module.skipped_samples["train"] == 3
    assert trainer.callback_metrics["data/skipped"].item() == 3
    # Both steps returned None (the one good image left alone in its batch is no BatchNorm step either):
    # Lightning still counts the optimizer step, but nothing was trained.
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_training_through_the_datamodule_survives_a_corrupt_image(tmp_path: Path, one_thread) -> None:
    root = make_synthetic_dataset(tmp_path / "d", 6, (64, 64), seed=4)
    (root / "images/000003.jpg").write_bytes((root / "images/000003.jpg").read_bytes()[:200])  # truncated
    config = load_config(
        None,
        [
            *TINY,
            f"data.train.images={root / 'images'}",
            f"data.train.annotations={root / 'annotations.json'}",
            "data.val_split=0.34",
            "data.batch_size=3",
        ],
    )
    data = DetectionDataModule(config)
    module = DetectionModule(config.to_dict(), data.class_names, data.category_ids)
    trainer = _trainer(max_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=data)
    named = [str(w.message) for w in caught if "000003.jpg" in str(w.message)]
    assert len(named) == 1, named
    in_train = any(r.file.name == "000003.jpg" for r in data.train_set.records)
    stage, key = ("train", "data/skipped") if in_train else ("val", "data/val_skipped")
    assert module.skipped_samples[stage] >= 1  # every epoch meets it again, counted each time
    assert trainer.callback_metrics[key].item() == 1  # sum over the last epoch
    assert trainer.global_step >= 1
    assert all(torch.isfinite(p).all() for p in module.parameters())
