"""Default boxes against the paper's counts and torchvision's DefaultBoxGenerator."""

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_convert

from multibox.boxes.anchors import count_boxes, default_boxes, linear_scales, make_layout
from multibox.errors import MultiboxError

SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
SSD300_STEPS = [8, 16, 32, 64, 100, 300]
SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def _torchvision_boxes(generator: DefaultBoxGenerator, features, size) -> torch.Tensor:
    images = ImageList(torch.zeros(1, 3, *size), [size])
    maps = [torch.zeros(1, 1, h, w) for h, w in features]
    xyxy = generator(images, maps)[0]
    return box_convert(xyxy, "xyxy", "cxcywh") / torch.tensor([size[1], size[0], size[1], size[0]])


def test_ssd300_has_8732_boxes_like_the_paper():
    layout = make_layout(SSD300_RATIOS, SSD300_SCALES, steps=SSD300_STEPS)
    assert layout.boxes_per_location() == [4, 6, 6, 6, 4, 4]
    assert sum(count_boxes(layout, SSD300_FEATURES)) == 8732
    assert default_boxes(layout, SSD300_FEATURES, (300, 300)).shape == (8732, 4)


def test_ssd300_boxes_equal_torchvision():
    layout = make_layout(SSD300_RATIOS, SSD300_SCALES, steps=SSD300_STEPS)
    ours = default_boxes(layout, SSD300_FEATURES, (300, 300))
    reference = _torchvision_boxes(
        DefaultBoxGenerator(SSD300_RATIOS, scales=SSD300_SCALES, steps=SSD300_STEPS), SSD300_FEATURES, (300, 300)
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def test_min_max_scales_equal_torchvision_without_steps():
    ratios = [[2, 3]] * 6
    features = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    layout = make_layout(ratios, min_scale=0.2, max_scale=0.95)
    ours = default_boxes(layout, features, (320, 320))
    reference = _torchvision_boxes(DefaultBoxGenerator(ratios, min_ratio=0.2, max_ratio=0.95), features, (320, 320))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert linear_scales(0.2, 0.95, 6)[-1] == 1.0


def test_non_square_input_keeps_boxes_square_in_pixels_and_centres_on_the_grid():
    layout = make_layout([[2]], [0.2, 0.3])
    boxes = default_boxes(layout, [(3, 6)], (150, 300))  # H=150, W=300
    assert boxes.shape == (3 * 6 * 4, 4)
    first = boxes[0]  # the s_k square box at cell (0, 0)
    torch.testing.assert_close(first[:2], torch.tensor([0.5 / 6, 0.5 / 3]))
    assert first[2] * 300 == pytest.approx(first[3] * 150)  # square in pixels: 0.2 * 150 px per side
    assert first[3] * 150 == pytest.approx(30.0)
    last_cell = boxes[-4]
    torch.testing.assert_close(last_cell[:2], torch.tensor([5.5 / 6, 2.5 / 3]))


def test_clip_limits_width_and_height():
    layout = make_layout([[2]], [0.9, 1.2], clip=True)
    assert default_boxes(layout, [(1, 1)], (100, 100))[:, 2:].max() <= 1.0
    unclipped = make_layout([[2]], [0.9, 1.2], clip=False)
    assert default_boxes(unclipped, [(1, 1)], (100, 100))[:, 2:].max() > 1.0


def test_layout_errors_are_one_line():
    with pytest.raises(MultiboxError, match="anchors.scales: expected 3"):
        make_layout([[2], [2]], [0.1, 0.2])
    with pytest.raises(MultiboxError, match="min_scale"):
        make_layout([[2]])
    layout = make_layout([[2]], [0.1, 0.2])
    with pytest.raises(MultiboxError, match="feature levels"):
        default_boxes(layout, [(2, 2), (1, 1)], (64, 64))


def test_explicit_box_sizes_per_level():
    # scale-aware SSD style: one square size per level (fractions of the shorter side), no extra ratios
    layout = make_layout([[], [2]], box_sizes=[[0.1], [0.2, 0.3]])
    assert layout.boxes_per_location() == [1, 6]
    boxes = default_boxes(layout, [(2, 2), (1, 1)], (100, 200))  # H=100, W=200
    assert boxes.shape == (2 * 2 * 1 + 6, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([0.25, 0.25, 10 / 200, 10 / 100]))
    wh = boxes[4:, 2:] * torch.tensor([200.0, 100.0])
    expected = [(20, 20), (20 * 2**0.5, 20 / 2**0.5), (20 / 2**0.5, 20 * 2**0.5), (30, 30)]
    torch.testing.assert_close(wh[:4], torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(MultiboxError, match="box_sizes"):
        make_layout([[2]], box_sizes=[[0.1], [0.2]])
