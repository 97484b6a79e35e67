"""Starting models from weight files: classification backbones, torchvision detectors, checkpoints.

Nothing is downloaded: every weight file is made here (downloads: test_weights_download.py).
Mostly SSDLite320 MobileNetV3-Large at width 0.5 and a 128x128 input (fast); VGG16 is built once,
for its layout mapping.
"""

import logging
import socket
import urllib.request

import pytest
import torch
import torchvision
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import ssdlite320_mobilenet_v3_large as torchvision_ssdlite
from torchvision.models.vgg import cfgs, make_layers

from multibox.config import load_config
from multibox.errors import MultiboxError
from multibox.models.detector import build_detector
from multibox.models.mobilenet_v3 import SSDLiteFeatureExtractorMobileNet, default_norm_layer
from multibox.models.vgg import SSDFeatureExtractorVGG, ssd300_extra_blocks
from multibox.models.weights import imagenet_weights_path

SSDLITE = ["model.name=ssdlite320_mobilenet_v3_large", "model.width_mult=0.5", "data.input_size=[128,128]"]


def _config(*overrides: str, base: list[str] = SSDLITE):
    return load_config(None, [*base, *overrides])


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Every float tensor (BatchNorm statistics included) to fresh random values, so a tensor that
    was not loaded cannot equal the file's by accident."""
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if value.is_floating_point():
                value.copy_(
                    torch.rand_like(value) + 0.5 if name.endswith("running_var") else torch.randn_like(value) * 0.1
                )
    return module


def _one_line_error(excinfo: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


# --- classification backbones -------------------------------------------------------------------


def _mobilenet_v3_classifier(width_mult: float) -> torch.nn.Module:
    """torchvision's ImageNet MobileNetV3-Large layout: full tail (SSDLite with a pretrained backbone)."""
    classifier = mobilenet_v3_large(
        weights=None, width_mult=width_mult, reduced_tail=False, norm_layer=default_norm_layer()
    )
    return _randomise(classifier)


def test_mobilenet_v3_backbone_from_classification_file(tmp_path) -> None:
    classifier = _mobilenet_v3_classifier(0.5)
    state = classifier.state_dict()
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(state, path)

    detector, _ = build_detector(_config(f"model.backbone_weights={path}"), num_classes=4)
    ours = detector.model.backbone.state_dict()

    # Independent of the mapping: torchvision's own split of the same classifier puts each tensor where it belongs.
    reference = SSDLiteFeatureExtractorMobileNet(classifier.features, default_norm_layer()).state_dict()
    backbone_keys = [k for k in reference if k.startswith("features.")]
    assert len(backbone_keys) > 250
    for key in backbone_keys:
        assert torch.equal(ours[key], reference[key]), key
    # Spot checks of the split at C4 (features.13): stem, its expansion conv, its depthwise conv, the last conv.
    assert torch.equal(ours["features.0.0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(ours["features.0.13.0.weight"], state["features.13.block.0.0.weight"])
    assert torch.equal(ours["features.1.0.1.0.weight"], state["features.13.block.1.0.weight"])
    assert torch.equal(ours["features.1.3.1.running_var"], state["features.16.1.running_var"])
    # With backbone weights the SSDLite backbone keeps MobileNetV3's full tail, as torchvision does.
    assert detector.model.backbone.out_channels[1] == classifier.features[-1].out_channels
    box_regression, cls_logits = detector.eval()(torch.rand(1, 3, 128, 128))
    assert cls_logits.shape[-1] == 5 and box_regression.shape[1] == cls_logits.shape[1]


def test_vgg16_backbone_from_classification_file(tmp_path) -> None:
    # torchvision's vgg16 layout, shapes only (its 120M-parameter classifier is never allocated)...
    with torch.device("meta"):
        layout = torchvision.models.vgg16(weights=None).state_dict()
    features = _randomise(make_layers(cfgs["D"]))  # ...and the same features module, with values
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in layout.items() if k.startswith("features.")
    }
    state["classifier.6.bias"] = torch.zeros(1000)  # the classifier is ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)

    detector, _ = build_detector(
        load_config(None, ["model.name=ssd300_vgg16", f"model.backbone_weights={path}"]), num_classes=4
    )
    ours = detector.model.backbone.state_dict()
    assert torch.equal(ours["features.0.weight"], state["features.0.weight"])  # conv1_1
    assert torch.equal(ours["features.21.bias"], state["features.21.bias"])  # conv4_3
    assert torch.equal(ours["extra.0.1.weight"], state["features.24.weight"])  # conv5_1
    assert torch.equal(ours["extra.0.5.weight"], state["features.28.weight"])  # conv5_3, the last conv of conv5
    assert torch.equal(ours["scale_weight"], torch.full((512,), 20.0))  # not in the classifier: as initialised
    # Independent of the mapping: the extractor built around the classifier's own features.
    reference = SSDFeatureExtractorVGG(features, ssd300_extra_blocks()).state_dict()
    conv5 = [f"extra.0.{i}." for i in range(7)]  # pool4 ... relu5_3; extra.0.7 is fc6/fc7
    from_classifier = [k for k in reference if k.startswith(("features.", *conv5))]
    assert len(from_classifier) == 26  # 13 convs, weight and bias
    for key in from_classifier:
        assert torch.equal(ours[key], reference[key]), key


def _mobilenet_v2_case():
    from multibox.models.mobilenet_v2 import SSDLiteFeatureExtractorMobileNetV2

    classifier = _randomise(torchvision.models.mobilenet_v2(weights=None, width_mult=0.35))
    config = ["model.name=ssdlite_mobilenet_v2", "model.width_mult=0.35", "data.input_size=[128,128]"]
    spot = {
        "features.0.14.0.weight": "features.14.conv.0.0.weight",
        "features.1.0.2.weight": "features.14.conv.2.weight",
        "features.1.4.1.running_mean": "features.18.1.running_mean",
    }
    return (
        classifier,
        config,
        lambda: SSDLiteFeatureExtractorMobileNetV2(classifier.features, torch.nn.BatchNorm2d),
        spot,
    )


def _resnet50_case():
    from multibox.models.resnet import SSDFeatureExtractorResNet, resnet50_extra_blocks, resnet50_features

    classifier = _randomise(torchvision.models.resnet50(weights=None))
    config = ["model.name=ssd_resnet50", "data.input_size=[300,300]"]
    spot = {
        "features.0.weight": "conv1.weight",
        "features.1.running_var": "bn1.running_var",
        "features.6.5.conv3.weight": "layer3.5.conv3.weight",
    }
    return (
        classifier,
        config,
        lambda: SSDFeatureExtractorResNet(resnet50_features(classifier), resnet50_extra_blocks()),
        spot,
    )


@pytest.mark.parametrize("case", [_mobilenet_v2_case, _resnet50_case], ids=["mobilenet_v2", "resnet50"])
def test_other_backbones_from_classification_files(tmp_path, case) -> None:
    classifier, config, make_reference, spot = case()
    state = classifier.state_dict()
    path = tmp_path / "classifier.pth"
    torch.save(state, path)
    detector, _ = build_detector(load_config(None, [*config, f"model.backbone_weights={path}"]), num_classes=4)
    ours = detector.model.backbone.state_dict()
    for key, theirs in spot.items():
        assert torch.equal(ours[key], state[theirs]), key
    reference = make_reference().state_dict()  # the extractor built around the classifier's own modules
    keys = [k for k in reference if k.startswith("features.")]
    assert len(keys) > 100
    for key in keys:
        assert torch.equal(ours[key], reference[key]), key


def test_imagenet_with_an_empty_cache_fails_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MULTIBOX_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    expected = tmp_path / "hub" / "checkpoints" / "mobilenet_v3_large-8738ca79.pth"
    assert imagenet_weights_path("ssdlite320_mobilenet_v3_large") == expected

    with pytest.raises(MultiboxError) as excinfo:
        build_detector(_config("model.backbone_weights=imagenet"), num_classes=4)
    url = "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"
    _one_line_error(excinfo, str(expected), url, "MULTIBOX_OFFLINE", "model.backbone_weights")
    assert not expected.exists()


def test_imagenet_weights_come_from_the_local_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    classifier = _mobilenet_v3_classifier(1.0)
    path = imagenet_weights_path("ssdlite320_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    torch.save(classifier.state_dict(), path)
    full = ["model.name=ssdlite320_mobilenet_v3_large", "data.input_size=[128,128]", "model.backbone_weights=ImageNet"]

    detector, _ = build_detector(load_config(None, full), num_classes=4)
    loaded = detector.model.backbone.state_dict()["features.1.0.1.0.weight"]
    assert torch.equal(loaded, classifier.state_dict()["features.13.block.1.0.weight"])

    with pytest.raises(MultiboxError) as excinfo:  # ImageNet weights are width 1.0 only
        build_detector(_config("model.backbone_weights=imagenet"), num_classes=4)
    _one_line_error(excinfo, str(path), "width_mult 1.0")


def test_backbone_weights_none_or_not_loaded() -> None:
    plain, _ = build_detector(_config("model.backbone_weights=none"), num_classes=4)
    assert plain.model.backbone.out_channels[1] == 240  # reduced tail, as torchvision without a pretrained backbone
    # load_weights=False (rebuilding a checkpoint) reads no file but keeps the architecture the weights need.
    config = _config("model.backbone_weights=/nowhere/backbone.pth", "model.weights=/nowhere/detector.pth")
    detector, _ = build_detector(config, num_classes=4, load_weights=False)
    assert detector.model.backbone.out_channels[1] == 480
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(config, num_classes=4)
    _one_line_error(excinfo, "/nowhere/backbone.pth", "not found")


# --- detector weights ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory) -> dict:
    """torchvision SSDLite320 state dicts (width 0.5, random weights and statistics): 5 and 91 classes."""
    folder = tmp_path_factory.mktemp("torchvision")
    files = {}
    for num_classes in (5, 91):
        torch.manual_seed(num_classes)
        model = _randomise(
            torchvision_ssdlite(weights=None, weights_backbone=None, num_classes=num_classes, width_mult=0.5)
        )
        files[num_classes] = (folder / f"ssdlite_{num_classes}.pth", model.eval())
        torch.save(model.state_dict(), files[num_classes][0])
    return files


def test_torchvision_detection_state_dict_gives_identical_outputs(torchvision_files) -> None:
    path, reference = torchvision_files[5]
    detector, _ = build_detector(_config(f"model.weights={path}"), num_classes=4)
    detector.eval()
    ours = detector.model.state_dict()
    assert ours.keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours[key], value), key
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        box_regression, cls_logits = detector(images)
        expected = reference.head(list(reference.backbone((images - 0.5) / 0.5).values()))
    torch.testing.assert_close(box_regression, expected["bbox_regression"], rtol=0, atol=0)
    torch.testing.assert_close(cls_logits, expected["cls_logits"], rtol=0, atol=0)


def test_fine_tuning_reinitialises_only_the_classification_layers(torchvision_files, caplog) -> None:
    path, _ = torchvision_files[91]
    state = torch.load(path, weights_only=True)
    torch.manual_seed(1)
    fresh, _ = build_detector(_config(), num_classes=5)
    torch.manual_seed(1)
    with caplog.at_level(logging.WARNING, logger="multibox"):
        detector, _ = build_detector(_config(f"model.weights={path}"), num_classes=5)

    ours, initial = detector.model.state_dict(), fresh.model.state_dict()
    reinitialised = set()
    for key, value in ours.items():
        if key.startswith("head.classification_head.") and value.shape != state[key].shape:
            assert value.shape[0] == 6 * 6  # 6 boxes per location x (5 classes + background)
            assert torch.equal(value, initial[key]), key  # the model's own fresh initialisation
            reinitialised.add(key.rsplit(".", 1)[0])
        else:
            assert torch.equal(value, state[key]), key  # backbone, regression head, depthwise cls blocks
    assert reinitialised == {f"head.classification_head.module_list.{level}.1" for level in range(6)}
    records = [r for r in caplog.records if "re-initialised" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "\n" not in message and str(path) in message and "91 classes" in message and "6" in message


def test_multibox_checkpoint(tmp_path) -> None:
    from multibox.engine.module import DetectionModule

    config = _config()
    class_names, category_ids = ["a", "b", "c"], [1, 2, 7]
    module = DetectionModule(config.to_dict(), class_names, category_ids)
    _randomise(module.detector)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)

    detector, _ = build_detector(_config(f"model.weights={path}"), num_classes=3)
    expected = module.detector.model.state_dict()
    assert detector.model.state_dict().keys() == expected.keys()
    for key, value in detector.model.state_dict().items():
        assert torch.equal(value, expected[key]), key

    other = ["model.name=ssdlite_mobilenet_v2", "model.width_mult=0.35", "data.input_size=[128,128]"]
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(load_config(None, [*other, f"model.weights={path}"]), num_classes=3)
    _one_line_error(excinfo, str(path), "ssdlite320_mobilenet_v3_large", "ssdlite_mobilenet_v2")


# --- errors -------------------------------------------------------------------------------------


def test_corrupt_and_foreign_files_give_one_line_errors(tmp_path, torchvision_files) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file at all" * 10)
    for key in ("model.weights", "model.backbone_weights"):
        with pytest.raises(MultiboxError) as excinfo:
            build_detector(_config(f"{key}={corrupt}"), num_classes=4)
        _one_line_error(excinfo, str(corrupt), key, "not a readable weight file")

    # Another model's detector weights (no name inside: the keys and shapes tell).
    path, _ = torchvision_files[5]
    other = ["model.name=ssdlite_mobilenet_v2", "model.width_mult=0.35", "data.input_size=[128,128]"]
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(load_config(None, [*other, f"model.weights={path}"]), num_classes=4)
    _one_line_error(excinfo, str(path), "does not fit ssdlite_mobilenet_v2")

    # The same model at another width: the backbone's shapes differ.
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(_config(f"model.weights={path}", "model.width_mult=0.75"), num_classes=4)
    _one_line_error(excinfo, str(path), "backbone.", "width_mult")

    # Detector weights as backbone weights and the other way round.
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(_config(f"model.backbone_weights={path}"), num_classes=4)
    _one_line_error(excinfo, str(path), "model.weights")
    classifier = tmp_path / "classifier.pth"
    torch.save(make_layers([8, "M"]).state_dict() | {"features.0.weight": torch.zeros(8, 3, 3, 3)}, classifier)
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(_config(f"model.weights={classifier}"), num_classes=4)
    _one_line_error(excinfo, str(classifier), "model.backbone_weights")
    # A classifier of another network: the tensors the backbone needs are missing.
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(_config(f"model.backbone_weights={classifier}"), num_classes=4)
    _one_line_error(excinfo, str(classifier), "MobileNetV3-Large", "missing")


def test_model_without_a_backbone_mapping() -> None:
    v1 = ["model.name=ssd_mobilenet_v1", "model.width_mult=0.25", "data.input_size=[128,128]"]
    with pytest.raises(MultiboxError) as excinfo:
        build_detector(load_config(None, [*v1, "model.backbone_weights=imagenet"]), num_classes=4)
    _one_line_error(excinfo, "ssd_mobilenet_v1", "no mapping", "model.backbone_weights")


def test_imagenet_mappings_live_in_the_model_table() -> None:
    """Each model's ImageNet mapping is its MODELS entry's `imagenet`: every model built on a torchvision
    classifier has one (custom: each backbone the config accepts); MobileNetV1, which torchvision lacks, none."""
    import typing

    from multibox.config import ModelConfig
    from multibox.models.factory import MODELS
    from multibox.models.weights import imagenet_models

    backbones = typing.get_args(ModelConfig.model_fields["backbone"].annotation)
    expected = [n for n in MODELS if n not in ("custom", "ssd_mobilenet_v1")] + [f"custom/{b}" for b in backbones]
    assert imagenet_models() == expected
    assert MODELS["ssd_mobilenet_v1"].imagenet is None
