"""EDM wrapper around a tiny diffusers UNet2DModel built offline from a config."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.models.edm_unet import EDMConfig, EDMUNetDenoiser, edm_scalings


def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=3,
    )


def test_scalings_limits() -> None:
    c_skip, c_out, c_in = edm_scalings(torch.tensor([1e-4, 1e4]), 0.5)
    assert c_skip[0] == pytest.approx(1.0, abs=1e-6) and c_skip[1] == pytest.approx(0.0, abs=1e-6)
    assert c_out[1] == pytest.approx(0.5, rel=1e-4)
    assert c_in[0] == pytest.approx(2.0, rel=1e-4)


def test_denoiser_shapes_conditioning_and_roundtrip(tmp_path) -> None:
    d = EDMUNetDenoiser(tiny_unet(), EDMConfig(num_classes=2)).eval()
    x = torch.randn(3, 1, 8, 8)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    cond = torch.tensor([0, 1, -1])
    out = d(x, sigma, cond)
    assert out.shape == x.shape
    # at tiny sigma the EDM denoiser is (almost) the identity
    assert torch.allclose(d(x, torch.full((3,), 1e-5), cond), x, atol=1e-3)
    # -1 means the null label
    assert torch.equal(d.labels(cond, 3, x.device), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="cond"):
        d(x, sigma, torch.tensor([0, 1]))
    d.save_pretrained(tmp_path)
    loaded = EDMUNetDenoiser.from_pretrained(tmp_path)
    assert loaded.config == d.config
    assert torch.allclose(loaded(x, sigma, cond), out, atol=1e-6)
    assert d.to_image(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]


def test_missing_directory_names_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        EDMUNetDenoiser.from_pretrained(tmp_path)
