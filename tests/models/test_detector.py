"""End-to-end parity: torchvision's ssd300_vgg16 weights in our detector give the same detections."""

import torch
import torch.nn.functional as F
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

from multibox.config import load_config
from multibox.models.detector import build_detector


def test_ssd300_vgg16_detections_equal_torchvision():
    torch.manual_seed(0)
    reference = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=5).eval()
    with torch.no_grad():  # spread the scores so ranking ties cannot differ between the two
        for module in reference.head.classification_head.module_list:
            module.weight.normal_(0.0, 0.0005)
            module.bias.uniform_(-1.0, 1.0)
    config = load_config(None, ["model.name=ssd300_vgg16", "data.input_size=[300,300]"])
    detector, spec = build_detector(config, num_classes=4, empty=True)  # no random init: the weights are assigned
    assert spec.num_boxes == 8732
    detector.model.load_state_dict(reference.state_dict(), assign=True)
    detector.eval()

    images = [torch.rand(3, 240, 320), torch.rand(3, 310, 280)]
    with torch.no_grad():
        expected = reference(images)
        resized = torch.cat(
            [F.interpolate(im[None], size=(300, 300), mode="bilinear", align_corners=False) for im in images]
        )
        ours = detector.detect(resized, torch.tensor([im.shape[-2:] for im in images]))

    for mine, theirs in zip(ours, expected, strict=True):
        assert len(theirs["scores"]) > 20
        assert len(mine["scores"]) == len(theirs["scores"])
        _assert_same_detections(mine, theirs)


def _assert_same_detections(mine: dict, theirs: dict) -> None:
    """The same set of (label, score, box): equal scores may come out in any order, so match
    each detection to one on the other side instead of comparing position by position. Boxes
    tied with the last kept score may be cut at either side of max_detections: leave those out."""
    floor = max(mine["scores"].min(), theirs["scores"].min()) + 1e-5
    mine = {k: v[mine["scores"] > floor] for k, v in mine.items()}
    theirs = {k: v[theirs["scores"] > floor] for k, v in theirs.items()}
    assert len(mine["scores"]) == len(theirs["scores"]) > 20
    same = (
        (mine["labels"][:, None] == theirs["labels"][None, :])
        & ((mine["scores"][:, None] - theirs["scores"][None, :]).abs() < 1e-5)
        & ((mine["boxes"][:, None, :] - theirs["boxes"][None, :, :]).abs().amax(-1) < 1e-2)
    )
    assert same.any(dim=1).all() and same.any(dim=0).all()
    torch.testing.assert_close(mine["scores"], theirs["scores"], atol=1e-5, rtol=1e-4)  # both sorted best first


def test_pixel_sizes_and_fraction_scales_give_identical_boxes():
    sizes = [21, 45, 99, 153, 207, 261, 315]
    common = ["model.name=ssd300_vgg16", "data.input_size=[300,300]", "anchors.steps=[8,16,32,64,100,300]"]
    by_pixels = load_config(None, common + [f"anchors.sizes={sizes}"])
    by_fractions = load_config(None, common + [f"anchors.scales={[s / 300 for s in sizes]}"])
    from multibox.boxes.anchors import default_boxes
    from multibox.models.detector import resolve_layout

    features = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    torch.testing.assert_close(
        default_boxes(resolve_layout(by_pixels), features, (300, 300)),
        default_boxes(resolve_layout(by_fractions), features, (300, 300)),
    )


def test_pixel_sizes_on_a_non_square_input_are_normalised_per_side():
    from multibox.boxes.anchors import default_boxes
    from multibox.models.detector import resolve_layout

    config = load_config(
        None,
        [
            "model.name=ssd300_vgg16",
            "data.input_size=[2160,3840]",
            "anchors.sizes=[21,45,99,153,207,261,315]",
            "anchors.steps=[8,16,32,64,100,300]",
        ],
    )
    boxes = default_boxes(
        resolve_layout(config), [(270, 480), (135, 240), (68, 120), (34, 60), (32, 58), (30, 56)], (2160, 3840)
    )
    first = boxes[0]  # the 21-px square box of the first cell, centre (4, 4) px
    torch.testing.assert_close(first, torch.tensor([4 / 3840, 4 / 2160, 21 / 3840, 21 / 2160]))


def test_ssdlite320_mobilenet_v3_large_detections_equal_torchvision(one_thread):
    torch.manual_seed(0)
    reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)
    images = [torch.rand(3, 200, 320), torch.rand(3, 330, 250)]
    with torch.no_grad():
        # With torchvision's from-scratch init and the initial BatchNorm statistics, eval-mode features
        # saturate alike everywhere: ~13 distinct scores, and tied boxes make any top-k cut arbitrary.
        # Statistics fitted to these images give every box its own score (300 distinct).
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the batch below
        reference.train().backbone(torch.stack([F.interpolate(im[None], size=(320, 320))[0] for im in images]))
        for block in reference.head.classification_head.module_list:
            block[-1].weight.normal_(0.0, 0.01)
            block[-1].bias.uniform_(-2.0, 2.0)
    reference.eval()
    overrides = [
        "model.name=ssdlite320_mobilenet_v3_large",
        "data.input_size=[320,320]",
        "eval.score_threshold=0.001",
        "eval.nms_threshold=0.55",
        "eval.topk_candidates=300",
        "eval.max_detections=300",
    ]
    detector, spec = build_detector(load_config(None, overrides), num_classes=4)
    assert spec.num_boxes == 3234
    detector.model.load_state_dict(reference.state_dict())
    detector.eval()

    with torch.no_grad():
        expected = reference(images)
        resized = torch.cat(
            [F.interpolate(im[None], size=(320, 320), mode="bilinear", align_corners=False) for im in images]
        )
        ours = detector.detect(resized, torch.tensor([im.shape[-2:] for im in images]))
    for mine, theirs in zip(ours, expected, strict=True):
        assert len(torch.unique(theirs["scores"])) == len(theirs["scores"])  # no ties: the comparison is exact
        assert len(theirs["scores"]) > 20 and len(mine["scores"]) == len(theirs["scores"])
        _assert_same_detections(mine, theirs)


def test_feature_sizes_follow_the_input_and_the_model_section():
    """Feature-map sizes are remembered per (model section, input size): a new size or a model change never
    gets another configuration's sizes, and each equals a fresh meta-device forward."""
    from multibox.models.factory import feature_map_sizes

    base = ["model.name=custom", "model.backbone=mobilenet_v3_large", "model.width_mult=0.25"]
    three = [*base, "model.strides=[8,16,32]", "anchors.box_sizes=[[12],[24],[48]]"]
    cases = [
        [*three, "data.input_size=[64,64]"],
        [*three, "data.input_size=[64,96]"],
        [*base, "model.strides=[16,32]", "anchors.box_sizes=[[24],[48]]", "data.input_size=[64,96]"],
        [*three, "data.input_size=[64,64]"],  # the first again: remembered
    ]
    seen = []
    for overrides in cases:
        config = load_config(None, overrides)
        detector, spec = build_detector(config, num_classes=2, load_weights=False)
        assert spec.feature_sizes == feature_map_sizes(detector.model, tuple(config.data.input_size))
        seen.append(spec.feature_sizes)
    assert seen[0] == [(8, 8), (4, 4), (2, 2)] and seen[1] == [(8, 12), (4, 6), (2, 3)]
    assert seen[2] == [(4, 6), (2, 3)] and seen[3] == seen[0]


def test_an_empty_build_takes_a_state_dict_and_then_equals_the_original(one_thread):
    """build_detector(empty=True), as checkpoints are loaded: parameters unallocated, buffers real (the image
    mean and std are not in the state dict), and after assigning the state dict the same outputs."""
    config = load_config(None, ["model.name=ssdlite320_mobilenet_v3_large", "model.width_mult=0.25"])
    original, _ = build_detector(config, 3)
    empty, _ = build_detector(config, 3, empty=True)
    assert all(p.is_meta for p in empty.parameters()) and not any(b.is_meta for b in empty.buffers())
    for name, buffer in original.named_buffers():
        assert torch.equal(buffer, empty.get_buffer(name)), name
    empty.load_state_dict(original.state_dict(), assign=True)
    assert not any(p.is_meta for p in empty.parameters())
    images = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        for ours, theirs in zip(original.eval()(images), empty.eval()(images), strict=True):
            assert torch.equal(ours, theirs)
    assert not any(p.is_meta for p in build_detector(config, 3)[0].parameters())  # the patch is undone
