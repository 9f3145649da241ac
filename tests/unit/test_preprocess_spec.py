"""The centre crop is recorded in the registered model (``arch["preprocess"]``) so the querier
preprocesses exactly as the owner did, also for models registered before it was recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.owner_ops import model_tensors
from client.preprocess import CROP_FRACTION, LEGACY_CROP_FRACTION, crop_fraction_of, preprocess, preprocess_spec


def test_the_crop_fraction_comes_from_the_arch() -> None:
    assert crop_fraction_of({"input_shape": [3, 96, 96], "layers": []}) == LEGACY_CROP_FRACTION == 0.875
    assert crop_fraction_of({"preprocess": preprocess_spec()}) == CROP_FRACTION == 1.0
    for bad in ({"crop_fraction": 0.0}, {"crop_fraction": 1.5}, "centre"):
        with pytest.raises(ValueError, match="preprocess"):
            crop_fraction_of({"preprocess": bad})


def test_preprocess_crops_the_longer_side_only_at_fraction_one() -> None:
    y, x = np.mgrid[0:60, 0:90]
    rgb = np.stack([x * 2, y * 4, (x + y)], axis=2).astype(np.uint8)  # 90 wide, 60 high
    full = preprocess(rgb, 60, 1.0)  # shorter side kept whole: rows are the image's rows
    assert torch.allclose(full[1, :, 30], torch.from_numpy((rgb[:, 45, 1].astype(np.float32) - 127) / 128),
                          atol=1 / 128)
    legacy = preprocess(rgb, 60, LEGACY_CROP_FRACTION)
    assert not torch.allclose(full, legacy)
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocess(rgb, 60, 0.1)


def test_a_registered_model_records_its_crop() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    arch, _ = model_tensors(net.eval(), 16)
    assert arch["preprocess"] == {"crop_fraction": CROP_FRACTION}
