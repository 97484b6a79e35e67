"""``data.decode: gpu`` on the GPU: nvJPEG (torchvision.io.decode_jpeg on CUDA) against OpenCV's CPU decode, and
the decoded validation batches against the CPU path's."""

from __future__ import annotations

import cv2
import torch
from torchvision.io import read_file

from multibox.config import load_config
from multibox.data.datamodule import DetectionDataModule
from multibox.data.gpu_decode import decode_images


def test_nvjpeg_decode_matches_opencv(gpu_data, device):
    files = sorted((gpu_data / "train" / "images").glob("*.jpg"))
    decoded = decode_images([read_file(str(path)) for path in files], device)
    for path, image in zip(files, decoded, strict=True):
        assert image is not None and image.device.type == device.type and image.dtype == torch.uint8
        expected = torch.from_numpy(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        difference = (image.cpu().int() - expected.int()).abs()
        # JPEG decoders differ in IDCT rounding and chroma upsampling: about one grey level on average
        assert image.shape == expected.shape and difference.float().mean() <= 1.0, (path.name, difference.max())


def test_gpu_decoded_validation_batches_equal_the_cpu_path(train_config, device):
    cpu = DetectionDataModule(load_config(train_config, ["data.decode=cpu"]))
    gpu = DetectionDataModule(load_config(train_config, ["data.decode=gpu"]))
    pairs = list(zip(cpu.val_dataloader(), gpu.val_dataloader(), strict=True))
    assert pairs
    for expected, encoded in pairs:
        batch = gpu.prepare_batch(encoded, device)
        assert batch["images"].device.type == device.type and batch["images"].dtype == torch.uint8
        for key in ("labels", "image_ids", "orig_sizes"):
            assert torch.equal(batch[key].cpu(), expected[key]), key
        torch.testing.assert_close(batch["boxes"].cpu(), expected["boxes"], atol=1e-6, rtol=0)
        difference = (batch["images"].cpu().int() - expected["images"].int()).abs()
        assert batch["images"].shape == expected["images"].shape and difference.float().mean() <= 1.0, difference.max()
