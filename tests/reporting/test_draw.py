"""draw_detections annotates a copy with stable class colours; save_image fails with one line."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from multibox.errors import MultiboxError
from multibox.reporting.draw import class_color, draw_detections, save_image


def gray_image(height: int = 240, width: int = 320) -> np.ndarray:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def test_draws_on_the_box_outline_only() -> None:
    image = gray_image()
    boxes = np.array([[100.0, 120.0, 200.0, 200.0]])
    out = draw_detections(image, boxes, ["dog"], scores=np.array([0.87]))
    assert out.shape == image.shape and out.dtype == np.uint8 and out is not image
    # The outline's left edge, below where the label sits, takes the class colour.
    assert tuple(out[160, 100]) == class_color("dog")
    assert tuple(out[200, 150]) == class_color("dog")
    # The box interior away from the label, and everything far from the box, is untouched.
    assert (out[150:190, 110:190] == 128).all()
    far = np.ones(image.shape[:2], dtype=bool)
    far[80:215, 85:215] = False
    assert (out[far] == 128).all()


def test_input_is_not_modified() -> None:
    image = gray_image()
    before = image.copy()
    draw_detections(image, np.array([[10, 10, 100, 100]]), ["cat"], scores=np.array([0.5]))
    assert np.array_equal(image, before)


def test_same_class_same_colour_across_images() -> None:
    boxes = np.array([[20.0, 40.0, 80.0, 120.0], [150.0, 60.0, 260.0, 200.0]])
    first = draw_detections(gray_image(), boxes, ["car", "car"])
    second = draw_detections(gray_image(480, 640), boxes[::-1], ["person", "car"])
    car = class_color("car")
    assert tuple(first[100, 20]) == car and tuple(first[150, 150]) == car
    assert tuple(second[100, 20]) == car  # same class, other image, other position in the list
    assert tuple(second[150, 150]) == class_color("person") != car


def test_color_key_picks_colour_by_class_index() -> None:
    out = draw_detections(gray_image(), np.array([[20.0, 40.0, 80.0, 120.0]]), ["car"], color_key=np.array([3]))
    assert tuple(out[100, 20]) == class_color(3)


def test_distinct_colours_for_neighbouring_classes() -> None:
    colours = [np.array(class_color(i), dtype=float) for i in range(20)]
    assert len({tuple(c) for c in colours}) == 20
    assert min(np.abs(a - b).sum() for a, b in zip(colours, colours[1:], strict=False)) > 60


def test_empty_detections_return_identical_copy() -> None:
    image = gray_image()
    out = draw_detections(image, np.zeros((0, 4)), [], scores=np.zeros(0))
    assert np.array_equal(out, image) and out is not image


def test_label_stays_inside_the_image() -> None:
    image = gray_image(100, 120)
    out = draw_detections(image, np.array([[90.0, 0.0, 119.0, 30.0]]), ["a long class name"], scores=np.array([0.99]))
    changed = (out != image).any(axis=2)
    assert changed[0].any()  # label placed inside the box at the top edge, not cut off above it
    assert changed[:, :60].any()  # shifted left to fit


def test_thickness_grows_with_image_size() -> None:
    def outline_width(size: int) -> int:
        image = gray_image(size, size)
        out = draw_detections(image, np.array([[size * 0.25, size * 0.25, size * 0.75, size * 0.75]]), ["x"])
        row = (out[int(size * 0.6)] != 128).any(axis=1)
        return int(row.sum()) // 2

    assert outline_width(1200) > outline_width(200) >= 1


def test_bad_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_detections(np.zeros((10, 10), dtype=np.uint8), np.zeros((0, 4)), [])


def test_save_image_writes_rgb_as_bgr(tmp_path: Path) -> None:
    image = gray_image(20, 30)
    image[..., 0] = 255  # red in RGB
    save_image(tmp_path / "out.png", image)
    bgr = cv2.imread(str(tmp_path / "out.png"))
    assert np.array_equal(bgr[..., ::-1], image)


def test_save_image_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.png"
    with pytest.raises(MultiboxError) as error:
        save_image(target, gray_image())
    message = str(error.value)
    assert str(target) in message and "does not exist" in message and "\n" not in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_save_image_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(MultiboxError, match="ro/out.png: cannot write image"):
            save_image(folder / "out.png", gray_image())
    finally:
        folder.chmod(0o700)


def test_save_image_unwritable_target(tmp_path: Path) -> None:
    """A folder where the file should go cannot be written, even by root."""
    target = tmp_path / "out.png"
    target.mkdir()
    with pytest.raises(MultiboxError, match="out.png: cannot write image"):
        save_image(target, gray_image())


def test_save_image_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(MultiboxError, match=r"out\.xyz"):
        save_image(tmp_path / "out.xyz", gray_image())


def test_best_label_is_drawn_last_and_labels_shrink_on_small_images() -> None:
    """Issue 14 item 13: a weaker detection's label covered the best one's; labels were too large on small images."""
    boxes = np.array([[10, 30, 60, 60], [10, 30, 60, 60]], np.float32)
    image = draw_detections(
        gray_image(64, 64), boxes, ["a", "b"], scores=np.array([0.9, 0.2]), color_key=np.array([0, 1])
    )
    label_pixels = {tuple(p) for p in image[20:30, 11:20].reshape(-1, 3).tolist()}
    assert class_color(0) in label_pixels and class_color(1) not in label_pixels
    from multibox.reporting.draw import _style

    assert _style(64, 64, None)[1] < _style(300, 300, None)[1]
