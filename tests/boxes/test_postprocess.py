"""Batched postprocess against torchvision's per-image, per-class SSD postprocess."""

from types import SimpleNamespace

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_convert

from multibox.boxes.postprocess import PostprocessSettings, _nms_survivors, postprocess


def _reference(regression, logits, defaults_cxcywh, size, settings):
    fake = SimpleNamespace(
        box_coder=TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)),
        score_thresh=settings.score_threshold,
        topk_candidates=settings.topk_candidates,
        nms_thresh=settings.nms_threshold,
        detections_per_img=settings.max_detections,
    )
    h, w = size
    anchors = box_convert(defaults_cxcywh, "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
    head = {"bbox_regression": regression, "cls_logits": logits}
    return TorchvisionSSD.postprocess_detections(fake, head, [anchors] * len(regression), [size] * len(regression))


def test_postprocess_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    num_defaults, num_classes = 600, 5
    xy = torch.rand(num_defaults, 2, generator=g) * 0.8 + 0.1
    defaults = torch.cat((xy, torch.rand(num_defaults, 2, generator=g) * 0.3 + 0.05), dim=1)
    regression = torch.randn(3, num_defaults, 4, generator=g) * 0.5
    logits = torch.randn(3, num_defaults, num_classes, generator=g) * 2
    settings = PostprocessSettings(score_threshold=0.2, nms_threshold=0.45, topk_candidates=50, max_detections=30)
    size = (240, 320)
    ours = postprocess(regression, logits, defaults, torch.tensor([size] * 3), settings)
    reference = _reference(regression, logits, defaults, size, settings)
    for mine, theirs in zip(ours, reference, strict=True):
        assert len(mine["scores"]) == len(theirs["scores"]) == 30
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        torch.testing.assert_close(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"], atol=1e-3, rtol=1e-4)


def test_boxes_come_back_in_each_images_original_pixels():
    defaults = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    logits = torch.tensor([[[0.0, 5.0]], [[0.0, 5.0]]])
    out = postprocess(torch.zeros(2, 1, 4), logits, defaults, torch.tensor([[100, 200], [50, 80]]))
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[50.0, 25.0, 150.0, 75.0]]))
    torch.testing.assert_close(out[1]["boxes"], torch.tensor([[20.0, 12.5, 60.0, 37.5]]))


def test_no_detection_above_threshold_gives_empty_results():
    out = postprocess(
        torch.zeros(2, 4, 4),
        torch.zeros(2, 4, 3),
        torch.rand(4, 4) * 0.5 + 0.2,
        torch.tensor([[10, 10]] * 2),
        PostprocessSettings(score_threshold=0.9),
    )
    assert [len(o["scores"]) for o in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4)


def _canonical(detections: dict) -> dict:
    """Detections by score, then label: equal scores of different classes may come in either order."""
    by_label = torch.argsort(detections["labels"], stable=True)
    order = by_label[torch.argsort(detections["scores"][by_label], descending=True, stable=True)]
    return {key: value[order] for key, value in detections.items()}


def _assert_same_as_torchvision(regression, logits, defaults, settings, size=(300, 300)) -> list[dict]:
    n = len(regression)
    ours = postprocess(regression, logits, defaults, torch.tensor([size] * n), settings)
    reference = _reference(regression, logits, defaults, size, settings)
    for mine, theirs in zip(map(_canonical, ours), map(_canonical, reference), strict=True):
        assert len(mine["scores"]) == len(theirs["scores"])
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        torch.testing.assert_close(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"], atol=1e-3, rtol=1e-4)
    return ours


def _random_defaults(num_defaults: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(num_defaults, 2, generator=g) * 0.8 + 0.1
    return torch.cat((xy, torch.rand(num_defaults, 2, generator=g) * 0.3 + 0.05), dim=1)


def test_coco_sized_batch_equals_torchvision():
    """SSD300's size (8,732 boxes, 91 classes) with a few hundred candidates per class above 0.01:
    the pruned selection must give torchvision's 200 detections per image."""
    g = torch.Generator().manual_seed(1)
    defaults = _random_defaults(8732, g)
    regression = torch.randn(3, 8732, 4, generator=g) * 0.5
    logits = torch.randn(3, 8732, 91, generator=g) * 1.2
    logits[..., 0] += 7.0
    ours = _assert_same_as_torchvision(regression, logits, defaults, PostprocessSettings(0.01, 0.45, 400, 200))
    assert [len(d["scores"]) for d in ours] == [200, 200, 200]


def test_selection_grows_when_the_best_candidates_suppress_each_other():
    """The 100 best candidates are one box repeated: the first pruned set (4 x max_detections) yields
    one survivor, so the selection must reach the weaker, spread-out boxes below it."""
    g = torch.Generator().manual_seed(2)
    defaults = torch.cat((torch.tensor([[0.5, 0.5, 0.3, 0.3]]).expand(100, 4), _random_defaults(300, g)))
    logits = torch.randn(2, 400, 3, generator=g)
    logits[:, :100, 1] += 8.0
    ours = _assert_same_as_torchvision(
        torch.zeros(2, 400, 4), logits, defaults, PostprocessSettings(0.05, 0.45, 400, 10)
    )
    assert [len(d["scores"]) for d in ours] == [10, 10]


def test_per_class_cap_applies_when_one_class_dominates():
    """Class 1 outscores the rest everywhere: its top-k cap (3) decides which boxes are candidates."""
    g = torch.Generator().manual_seed(3)
    defaults = _random_defaults(300, g)
    logits = torch.randn(2, 300, 4, generator=g)
    logits[..., 1] += 5.0
    ours = _assert_same_as_torchvision(torch.zeros(2, 300, 4), logits, defaults, PostprocessSettings(0.01, 0.3, 3, 8))
    assert [int((d["labels"] == 1).sum()) for d in ours] <= [3, 3]


def test_one_nms_call_for_the_batch_equals_one_per_image():
    """The CUDA path (one batched_nms over all images) against the CPU path, on the CPU."""
    g = torch.Generator().manual_seed(4)
    boxes = torch.rand(4, 500, 4, generator=g) * 100
    boxes = torch.cat((boxes[..., :2], boxes[..., :2] + boxes[..., 2:] * 0.5 + 1), dim=-1)
    scores = torch.softmax(torch.randn(4, 500, 6, generator=g) * 2, dim=-1)  # column 0: background
    settings = PostprocessSettings(0.02, 0.45, 100, 50)
    per_image = _nms_survivors(boxes, scores.clone(), settings, one_call=False)
    one_call = _nms_survivors(boxes, scores.clone(), settings, one_call=True)
    for a, b in zip(per_image, one_call, strict=True):
        assert torch.equal(a, b)
    assert 0 < int(per_image[3].sum()) < per_image[3].numel()
