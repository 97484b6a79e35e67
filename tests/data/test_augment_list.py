"""List form of data.augment: named albumentations (and multibox SSD) transforms, validated, boxes kept right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multibox.config import load_config
from multibox.data.transforms import build_augment_steps, build_train_transform
from multibox.errors import MultiboxError

from .test_augment_transforms import _bbox_of, _colourful, _scene

SPEC = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "p": 0.5},
    {"name": "ZoomOut", "max_scale": 2.0, "p": 0.3},
    {"name": "IoUCrop", "min_ious": [None, 0.3, 0.5]},
    {"name": "Affine", "translate_percent": 0.1, "p": 0.3},
    {"name": "PhotometricDistort", "p": 0.5},
]


def test_list_form_keeps_boxes_on_the_rendered_object() -> None:
    transform = build_train_transform(SPEC, (72, 96), seed=0)
    rng = np.random.default_rng(1)
    kept, outputs = 0, set()
    for _ in range(60):
        image, boxes = _scene(rng)
        out, out_boxes, labels = transform(image, boxes, np.array([4]))
        assert out.shape == (72, 96, 3) and out.dtype == np.uint8  # the resize is appended
        if not len(out_boxes):
            continue
        visible = _bbox_of(_colourful(out))
        assert visible is not None and labels.tolist() == [4]
        np.testing.assert_allclose(out_boxes[0], visible, atol=2.0)
        kept += 1
        outputs.add(tuple(np.round(out_boxes[0]).tolist()))
    assert kept >= 30 and len(outputs) >= 25


def test_empty_list_is_plain_resize() -> None:
    out, boxes, _ = build_train_transform([], (40, 40), seed=0)(
        np.zeros((20, 10, 3), np.uint8), np.array([[1, 2, 5, 10]]), np.array([1])
    )
    assert out.shape == (40, 40, 3)
    np.testing.assert_allclose(boxes, [[4, 4, 20, 20]])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            [{"name": "HorizontalFlip"}, {"name": "HorizontalFlipp"}],
            r"data\.augment\[1\]: unknown transform 'HorizontalFlipp'",
        ),
        (
            [{"name": "RandomBrightnessContrast", "brightness_limit": "x"}],
            r"data\.augment\[0\]: bad arguments for RandomBrightnessContrast: brightness_limit",
        ),
        ([{"name": "HorizontalFlip", "prob": 0.5}], r"data\.augment\[0\]: HorizontalFlip has no argument\(s\) prob"),
        ([{"name": "ZoomOut", "max_scale": 0.5}], r"data\.augment\[0\]: bad arguments for ZoomOut: max_scale"),
        ([{"name": "Mosaic"}], r"data\.augment\[0\]: Mosaic is not allowed"),
        ([{"name": "RandomCrop3D", "size": [2, 2, 2]}], r"data\.augment\[0\]: RandomCrop3D is not allowed"),
        ([{"name": "Normalize"}], r"data\.augment\[0\]: Normalize is not allowed .*uint8"),
        ([{"name": "Compose"}], r"data\.augment\[0\]: unknown transform"),
        (["HorizontalFlip"], r"data\.augment\[0\]: expected a mapping with a 'name' key"),
    ],
)
def test_bad_entries_give_one_line_errors(spec: list, message: str) -> None:
    with pytest.raises(MultiboxError, match=message) as info:
        build_augment_steps(spec)
    assert "\n" not in str(info.value)


def test_config_accepts_list_form(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  augment:\n    - {name: HorizontalFlip, p: 0.5}\n"
        "    - {name: RandomBrightnessContrast, brightness_limit: 0.2, p: 0.5}\n"
        "    - {name: ZoomOut, max_scale: 2.0, p: 0.3}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert [step["name"] for step in config.data.augment] == ["HorizontalFlip", "RandomBrightnessContrast", "ZoomOut"]
    assert load_config(path, ["data.augment=ssdlite"]).data.augment == "ssdlite"
    transform = build_train_transform(config.data.augment, config.data.input_size, seed=0)
    assert transform(np.zeros((50, 60, 3), np.uint8), np.zeros((0, 4)), np.zeros(0))[0].shape == (300, 300, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.augment=[{name: HorizontalFlip}, {name: Blurr}]",
            r"override data\.augment=.*: data\.augment: data\.augment\[1\]: unknown transform 'Blurr'",
        ),
        ("data.augment=[{name: Blur, blur_limit: abc}]", r"data\.augment\[0\]: bad arguments for Blur"),
        ("data.augment=yolo", r"data\.augment: expected ssd, ssdlite, none or a list"),
    ],
)
def test_config_rejects_bad_list_in_one_line(tmp_path: Path, override: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data: {}\n", encoding="utf-8")
    with pytest.raises(MultiboxError, match=message) as info:
        load_config(path, [override])
    assert "\n" not in str(info.value)


def test_image_only_steps_build_without_albumentations_warning() -> None:
    """custom_data.yaml's brightness step printed albumentations' "Got processor for bboxes, but no transform to
    process it" at every training start; the boxes pass through such steps unchanged, so there is nothing to say."""
    import warnings

    from multibox.data.transforms import build_train_transform

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_train_transform([{"name": "RandomBrightnessContrast", "p": 0.5}], (64, 64))
