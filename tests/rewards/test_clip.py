"""CLIP score and aesthetic head on a tiny open_clip model built offline from a config dict
(random weights saved to safetensors and loaded back as a local checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adaptive_tts.rewards.clip import AestheticScore, CLIPBackbone, CLIPScore, load_aesthetic_head

NAME = "adaptive-tts-tiny-clip"
CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PROMPTS = ["a photo of a cat", "a red car", "a bowl of fruit"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    cfg = root / f"{NAME}.json"
    cfg.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(NAME, pretrained=None)
    ckpt = root / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return {"config": cfg, "ckpt": ckpt}


@pytest.fixture(scope="module")
def backbone(files) -> CLIPBackbone:
    return CLIPBackbone(NAME, files["ckpt"], model_config=files["config"], device="cpu")


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Images whose values are multiples of 1/255 (exact through 8-bit PIL)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255


def test_clip_score_matches_open_clip(files, backbone: CLIPBackbone) -> None:
    import open_clip
    from PIL import Image

    ref, _, preprocess = open_clip.create_model_and_transforms(NAME, pretrained=str(files["ckpt"]))
    ref.eval()
    tok = open_clip.get_tokenizer(NAME)
    score = CLIPScore(PROMPTS, backbone=backbone)
    imgs, cond = images(4), torch.tensor([0, 2, 1, 0])
    got = score(imgs, cond)
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in imgs]
    with torch.no_grad():
        fi = F.normalize(ref.encode_image(torch.stack([preprocess(p) for p in pil])), dim=-1)
        ft = F.normalize(ref.encode_text(tok(PROMPTS)), dim=-1)
    want = (fi * ft[cond]).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert got.shape == (4,) and (got.abs() <= 1).all()
    # resizing path: a 64x64 image (bicubic, antialiased) stays close to open_clip's PIL resize
    big = images(2, 64, seed=3)
    pil_big = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in big]
    with torch.no_grad():
        fb = F.normalize(ref.encode_image(torch.stack([preprocess(p) for p in pil_big])), dim=-1)
    cos = (fb * backbone.image_features(big)).sum(-1)
    assert (cos > 0.99).all()


def test_batched_cached_and_checked(files, backbone: CLIPBackbone) -> None:
    before = backbone.text_encodes
    a = CLIPScore(PROMPTS, backbone=backbone)
    b = CLIPScore([*PROMPTS, "a new prompt"], backbone=backbone)
    assert backbone.text_encodes - before <= len(PROMPTS) + 1  # each prompt encoded once
    assert torch.equal(a.text, b.text[:3])
    imgs, cond = images(7, seed=1), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    small = CLIPBackbone(NAME, files["ckpt"], device="cpu", batch_size=2)
    torch.testing.assert_close(CLIPScore(PROMPTS, backbone=small)(imgs, cond), a(imgs, cond))
    assert small.image_encodes == 7
    with pytest.raises(ValueError, match="cond"):
        a(imgs, None)
    with pytest.raises(ValueError, match="cond"):
        a(imgs[:2], torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        a(imgs[:, :1], cond)
    assert CLIPScore(["only"], backbone=backbone)(imgs[:2]).shape == (2,)


def test_missing_files_are_named(tmp_path: Path, files) -> None:
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        CLIPBackbone(NAME, tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CLIPBackbone(NAME, files["ckpt"], model_config=tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="head.safetensors"):
        load_aesthetic_head(tmp_path / "head.safetensors")


def test_aesthetic_linear_and_mlp_heads(tmp_path: Path, backbone: CLIPBackbone) -> None:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    w, bias = torch.randn(1, 16, generator=g), torch.randn(1, generator=g)
    save_file({"weight": w, "bias": bias}, str(tmp_path / "linear.safetensors"))
    # LAION's improved predictor layout: Linear layers at indices 0, 2, 4, 6, 7 (dropouts between)
    dims = [16, 32, 8, 4, 2, 1]
    mlp = {}
    for i, idx in enumerate([0, 2, 4, 6, 7]):
        mlp[f"layers.{idx}.weight"] = torch.randn(dims[i + 1], dims[i], generator=g)
        mlp[f"layers.{idx}.bias"] = torch.randn(dims[i + 1], generator=g)
    save_file(mlp, str(tmp_path / "mlp.safetensors"))
    imgs = images(3, seed=2)
    emb = backbone.image_features(imgs)
    lin = AestheticScore(tmp_path / "linear.safetensors", backbone=backbone)
    torch.testing.assert_close(lin(imgs), (emb @ w.T + bias)[:, 0])
    head = load_aesthetic_head(tmp_path / "mlp.safetensors")
    assert [m.in_features for m in head] == dims[:-1]  # type: ignore[union-attr]
    want = emb
    for idx in [0, 2, 4, 6, 7]:
        want = want @ mlp[f"layers.{idx}.weight"].T + mlp[f"layers.{idx}.bias"]
    torch.testing.assert_close(
        AestheticScore(tmp_path / "mlp.safetensors", backbone)(imgs), want[:, 0]
    )
    save_file({"weight": torch.randn(1, 8)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="8-d embeddings, CLIP gives 16"):
        AestheticScore(tmp_path / "bad.safetensors", backbone=backbone)
