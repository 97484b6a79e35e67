"""Batched postprocess against torchvision's per-image, per-class SSD postprocess."""

from types import SimpleNamespace

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.ssd import SSD as TorchvisionSSD
from torchvision.ops import box_convert

from multibox.boxes.postprocess import PostprocessSettings, postprocess


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
    for mine, theirs in zip(ours, reference):
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
    out = postprocess(torch.zeros(2, 4, 4), torch.zeros(2, 4, 3), torch.rand(4, 4) * 0.5 + 0.2, torch.tensor([[10, 10]] * 2),
                      PostprocessSettings(score_threshold=0.9))
    assert [len(o["scores"]) for o in out] == [0, 0]
    assert out[0]["boxes"].shape == (0, 4)
