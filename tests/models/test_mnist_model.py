"""Embedded MNIST model: shipped weights by name, classifiers, data loading, training smoke run."""

from __future__ import annotations

import gzip
import json
import struct

import pytest
import torch

from adaptive_tts import models
from adaptive_tts.models.classifiers import (
    EvalResNet,
    RewardCNN,
    build_classifier,
    load_classifier,
    save_classifier,
)
from adaptive_tts.models.edm_unet import EDMConfig, EDMUNetDenoiser
from adaptive_tts.models.mnist_data import (
    load_mnist,
    save_mnist,
    split_indices,
    to_model_space,
    to_unit_space,
)


def _synthetic(n_per_class: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 28, 28), generator=gen, dtype=torch.uint8)
    return images, labels


def _write_idx(path, data: torch.Tensor, compress: bool = False) -> None:
    header = struct.pack(">HBB", 0, 0x08, data.dim()) + struct.pack(f">{data.dim()}I", *data.shape)
    raw = header + data.to(torch.uint8).numpy().tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


# ------------------------------------------------------------------ shipped weights by name
def test_available_and_unknown_name() -> None:
    assert models.available() == ["mnist", "mnist-eval-clf", "mnist-reward-clf"]
    with pytest.raises(ValueError, match="mnist-reward-clf"):
        models.load("cifar10")


def test_shipped_weights_load_and_shapes() -> None:
    for name in models.available():
        d = models.weights_path(name)
        for f in d.iterdir():
            assert f.stat().st_size <= 16 * 1024 * 1024, f
    net = models.load("mnist")
    assert isinstance(net, EDMUNetDenoiser) and not net.training
    assert net.sample_shape == (1, 32, 32) and net.conditional
    assert next(net.parameters()).dtype == torch.float32
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = net(x, torch.tensor([1.0, 5.0]), torch.tensor([3, -1]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert net.to_image(out).min() >= 0 and net.to_image(out).max() <= 1
    for name in ("mnist-reward-clf", "mnist-eval-clf"):
        clf = models.load(name)
        assert not clf.training
        with torch.no_grad():
            assert clf(torch.rand(3, 1, 32, 32)).shape == (3, 10)


def test_shipped_classifiers_on_held_out_digits() -> None:
    from adaptive_tts.models.mnist_data import load_split

    _, (ho_x, ho_y) = load_split()
    x, y = to_unit_space(ho_x[::10]), ho_y[::10]  # 100 held-out digits, 10 per class
    for name in ("mnist-reward-clf", "mnist-eval-clf"):
        with torch.no_grad():
            acc = (models.load(name)(x).argmax(1) == y).float().mean().item()
        assert acc >= 0.9, (name, acc)


def test_missing_weights_raise_file_not_found(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        models.load("mnist-eval-clf")


# ------------------------------------------------------------------ classifiers
@pytest.mark.parametrize("arch", ["reward_cnn", "eval_resnet"])
def test_classifier_save_load_roundtrip(arch: str, tmp_path) -> None:
    torch.manual_seed(0)
    kwargs = {"width": 8}
    model = build_classifier(arch, **kwargs).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
    assert ref.shape == (4, 10)
    save_classifier(model, tmp_path / "clf", arch, kwargs, {"holdout_accuracy": 0.5})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = load_classifier(tmp_path / "clf")
    assert isinstance(loaded, RewardCNN if arch == "reward_cnn" else EvalResNet)
    assert not loaded.training
    assert torch.allclose(loaded(x), ref, atol=1e-6)
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["meta"] == {
        "holdout_accuracy": 0.5
    }
    with pytest.raises(FileNotFoundError, match="classifier file missing"):
        load_classifier(tmp_path)
    with pytest.raises(ValueError, match="arch"):
        build_classifier("vgg")


# ------------------------------------------------------------------ data
@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_idx_directory(compress: bool, tmp_path) -> None:
    images, labels = _synthetic()
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    got_x, got_y = load_mnist(tmp_path)
    assert got_x.dtype == torch.uint8 and got_y.dtype == torch.long
    assert torch.equal(got_x, images) and torch.equal(got_y, labels)


def test_load_mnist_safetensors_and_errors(tmp_path) -> None:
    images, labels = _synthetic()
    path = tmp_path / "digits.safetensors"
    save_mnist(path, images, labels)
    got_x, got_y = load_mnist(path)
    assert torch.equal(got_x, images) and torch.equal(got_y, labels)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_mnist(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist(tmp_path)  # a directory without idx files
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_mnist(bad)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="x.txt"):
        load_mnist(tmp_path / "x.txt")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _write_idx(wrong / "train-images-idx3-ubyte", images)
    _write_idx(wrong / "train-labels-idx1-ubyte", labels[:-1])
    with pytest.raises(ValueError, match="must match"):
        load_mnist(wrong)


def test_split_and_model_space() -> None:
    labels = torch.arange(10).repeat_interleave(500)
    tr, ho = split_indices(labels)
    assert len(tr) == 4000 and len(ho) == 1000
    assert set(tr.tolist()).isdisjoint(ho.tolist())
    assert torch.bincount(labels[ho], minlength=10).tolist() == [100] * 10
    tr2, ho2 = split_indices(labels)
    assert torch.equal(ho, ho2) and torch.equal(tr, tr2)  # fixed
    images, _ = _synthetic(1)
    m = to_model_space(images)
    assert m.shape == (10, 1, 32, 32) and m.min() >= -1 and m.max() <= 1
    assert (m[:, :, :2] == -1).all()  # padding is black
    assert torch.allclose(to_unit_space(images), (m + 1) / 2)


# ------------------------------------------------------------------ training + persistence
def test_tiny_training_smoke(tmp_path) -> None:
    from experiments.train_mnist import main

    data = tmp_path / "digits.safetensors"
    images, labels = _synthetic(110)  # enough for the 100-per-class held-out split
    save_mnist(data, images, labels)
    log = main(["--tiny", "--steps", "2", "--data", str(data), "--out", str(tmp_path / "m")])
    assert log["steps"] == 2 and log["train_digits"] == 100
    saved = json.loads((tmp_path / "m" / "train_log.json").read_text())
    assert saved["steps"] == 2 and len(saved["loss_curve"]) == 2
    net = EDMUNetDenoiser.from_pretrained(tmp_path / "m")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32), torch.tensor([0.5, 2.0]), torch.tensor([1, 10]))
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()


def test_from_pretrained_roundtrip_tiny_unet(tmp_path) -> None:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=4,
        num_class_embeds=11,
    )
    net = EDMUNetDenoiser(unet, EDMConfig(sigma_data=0.5)).eval()
    x, sigma, cond = (
        torch.randn(3, 1, 16, 16),
        torch.tensor([0.1, 1.0, 20.0]),
        torch.tensor([0, 9, -1]),
    )
    with torch.no_grad():
        ref = net(x, sigma, cond)
    net.save_pretrained(tmp_path)
    loaded = EDMUNetDenoiser.from_pretrained(tmp_path)
    assert loaded.config == net.config and loaded.sample_shape == (1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x, sigma, cond), ref, atol=1e-6)
