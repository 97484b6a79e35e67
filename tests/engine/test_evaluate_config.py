"""`multibox eval` with a config of its own: another input size, and a config with only a val split (issue 13)."""

import pytest

from multibox.engine.evaluate import evaluate_checkpoint


def _config(tmp_path, dataset, train: bool, size: str):
    split = f"{{images: {dataset / 'images'}, annotations: {dataset / 'annotations.json'}}}"
    text = "data:\n" + (f"  train: {split}\n" if train else "") + f"  val: {split}\n  input_size: {size}\n"
    text += "  num_workers: 0\ntrain: {progress: false, accelerator: cpu}\n"
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("size", ["[96, 96]", "[48, 80]"])
def test_eval_at_another_input_size_than_the_checkpoints(tmp_path, tiny_checkpoint, shapes_dataset, size):
    metrics = evaluate_checkpoint(tiny_checkpoint, _config(tmp_path, shapes_dataset, True, size))
    assert 0.0 <= metrics["map_50"] <= 1.0


def test_eval_with_a_config_that_has_only_a_val_split(tmp_path, tiny_checkpoint, shapes_dataset):
    metrics = evaluate_checkpoint(tiny_checkpoint, _config(tmp_path, shapes_dataset, False, "[64, 64]"))
    assert 0.0 <= metrics["map"] <= 1.0
