# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The metrics through the real pyiqa, offline: PSNR/SSIM against an independent computation, LPIPS and MUSIQ with
weights built here and loaded from local files, and the one-line messages when weights cannot be downloaded."""

import weakref
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

pyiqa = pytest.importorskip("pyiqa", reason="the evaluation tests need pyiqa: pip install 'diffusers-dit4sr[eval]'")

from diffusers_dit4sr import evaluation  # noqa: E402
from diffusers_dit4sr.evaluation import MetricUnavailableError, check_metrics, evaluate  # noqa: E402

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # what torchvision's AlexNet_Weights.IMAGENET1K_V1 is saved as


def write_image(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def random_pixels(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def torch_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub folder: nothing cached, and nothing can be downloaded here."""
    hub = tmp_path / "torch-hub"
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    monkeypatch.setattr("pyiqa.utils.download_util.DEFAULT_CACHE_DIR", str(hub / "pyiqa"))
    yield hub
    torch.hub.set_dir(previous)


# --- PSNR and SSIM against an independent computation -------------------------------------------------------------


def y_channel(pixels: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 RGB, in [0, 1] (16 to 235 over 255)."""
    rgb = pixels.astype(np.float64) / 255.0
    return (16.0 + rgb @ np.array([65.481, 128.553, 24.966])) / 255.0


def reference_psnr(a: np.ndarray, b: np.ndarray, crop: int = 0) -> float:
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    mse = np.mean((y_channel(a) - y_channel(b)) ** 2)
    return 10.0 * np.log10(1.0 / (mse + 1e-8))  # pyiqa's eps: identical images give 80 dB, not infinity


def reference_ssim(a: np.ndarray, b: np.ndarray, crop: int = 0) -> float:
    """Wang et al.'s SSIM on the Y channel rounded to 0..255, 11x11 Gaussian window (sigma 1.5), valid region."""
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    x, y = np.round(y_channel(a) * 255.0), np.round(y_channel(b) * 255.0)
    offsets = np.arange(11) - 5
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    kernel /= kernel.sum()

    def filtered(image: np.ndarray) -> np.ndarray:
        windows = np.lib.stride_tricks.sliding_window_view(image, (11, 11))
        return np.einsum("ijkl,kl->ij", windows, kernel)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filtered(x), filtered(y)
    var_x, var_y = filtered(x * x) - mu_x**2, filtered(y * y) - mu_y**2
    cov = filtered(x * y) - mu_x * mu_y
    contrast_structure = np.maximum((2 * cov + c2) / (var_x + var_y + c2), 0)
    return float(np.mean((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * contrast_structure))


def test_psnr_and_ssim_match_an_independent_computation(tmp_path):
    gray_a = np.full((24, 32, 3), 100)
    gray_b = np.full((24, 32, 3), 110)  # known MSE on Y: (219 * 10 / 255**2) ** 2
    noisy = random_pixels(24, 32, seed=1)
    near = np.clip(noisy.astype(int) + np.random.default_rng(2).integers(-20, 21, noisy.shape), 0, 255)
    border = noisy.copy()
    border[:3] = 0  # differs from `noisy` only within 3 px of the top border
    pairs = {"gray": (gray_a, gray_b), "same": (noisy, noisy), "noise": (noisy, near), "border": (noisy, border)}
    results = [write_image(tmp_path / "out" / f"{name}.png", a) for name, (a, _) in pairs.items()]
    references = [write_image(tmp_path / "gt" / f"{name}.png", b) for name, (_, b) in pairs.items()]

    plain = evaluate(results, references, metrics=["psnr", "ssim"], device="cpu", batch_size=2)
    cropped = evaluate(results, references, metrics=["psnr", "ssim"], device="cpu", crop_border=3)

    assert reference_psnr(gray_a, gray_b) == pytest.approx(10 * np.log10(1 / ((219 * 10 / 255**2) ** 2 + 1e-8)))
    for index, (a, b) in enumerate(pairs.values()):
        assert plain["psnr"].per_image[index] == pytest.approx(reference_psnr(a, b), abs=1e-6)
        assert plain["ssim"].per_image[index] == pytest.approx(reference_ssim(a, b), abs=1e-6)
        assert cropped["psnr"].per_image[index] == pytest.approx(reference_psnr(a, b, crop=3), abs=1e-6)
        assert cropped["ssim"].per_image[index] == pytest.approx(reference_ssim(a, b, crop=3), abs=1e-6)
    assert plain["psnr"].per_image[1] == pytest.approx(80.0) and plain["ssim"].per_image[1] == pytest.approx(1.0)
    assert cropped["psnr"].per_image[3] == pytest.approx(80.0) and plain["psnr"].per_image[3] < 40
    assert plain["psnr"].mean == pytest.approx(np.mean(plain["psnr"].per_image))
    assert plain["psnr"].options == {"test_y_channel": True, "color_space": "ycbcr", "crop_border": 0}
    assert not plain["psnr"].lower_better and not plain["ssim"].lower_better


# --- Networks with weights built here, loaded through pyiqa's local-path options ----------------------------------


@pytest.fixture
def lpips_weights(torch_hub, tmp_path) -> Path:
    """Random AlexNet features where torchvision looks for them, and random LPIPS layers in a local file."""
    import torchvision
    from pyiqa.archs.lpips_arch import LPIPS

    torch.manual_seed(0)
    (torch_hub / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), torch_hub / "checkpoints" / ALEXNET_FILE)
    network = LPIPS(pretrained=False)
    for layer in network.lins:
        torch.nn.init.uniform_(layer.model[-1].weight, 0.0, 1.0)  # LPIPS's layers are non-negative
    torch.save(network.state_dict(), tmp_path / "lpips_local.pth")
    return tmp_path / "lpips_local.pth"


@pytest.fixture
def musiq_weights(tmp_path) -> Path:
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(0)
    torch.save(MUSIQ(pretrained=False).state_dict(), tmp_path / "musiq_local.pth")
    return tmp_path / "musiq_local.pth"


@pytest.fixture
def images(tmp_path) -> tuple[list[Path], list[Path]]:
    """Three results and references: two of one size, one of another."""
    sizes = [(40, 48), (40, 48), (48, 36)]
    results = [
        write_image(tmp_path / "out" / f"{i}.png", random_pixels(*size, seed=i)) for i, size in enumerate(sizes)
    ]
    references = [
        write_image(tmp_path / "gt" / f"{i}.png", random_pixels(*size, seed=10 + i)) for i, size in enumerate(sizes)
    ]
    return results, references


def test_lpips_and_musiq_score_with_local_weights(lpips_weights, musiq_weights, images):
    results, references = images
    options = {
        "lpips": {"pretrained_model_path": str(lpips_weights)},
        "musiq": {"pretrained_model_path": str(musiq_weights)},
    }
    progress = []

    one_by_one = evaluate(
        results, references, metrics=["lpips", "musiq"], device="cpu", metric_options=options,
        progress=lambda *call: progress.append(call),
    )  # fmt: skip
    batched = evaluate(
        results, references, metrics=["lpips", "musiq"], device="cpu", metric_options=options, batch_size=3
    )
    again = evaluate(results, references, metrics=["lpips", "musiq"], device="cpu", metric_options=options)

    for metric in ("lpips", "musiq"):
        values = np.array(one_by_one[metric].per_image)
        assert values.shape == (3,) and np.isfinite(values).all()
        assert one_by_one[metric].per_image == again[metric].per_image  # deterministic
        np.testing.assert_allclose(batched[metric].per_image, values, rtol=1e-5, atol=1e-6)  # batching = one by one
        assert one_by_one[metric].mean == pytest.approx(values.mean())
    assert len(set(one_by_one["lpips"].per_image)) == 3 and len(set(one_by_one["musiq"].per_image)) == 3
    assert one_by_one["lpips"].lower_better and not one_by_one["musiq"].lower_better
    assert progress == [
        ("lpips", 1, 3),
        ("lpips", 2, 3),
        ("lpips", 3, 3),
        ("musiq", 1, 3),
        ("musiq", 2, 3),
        ("musiq", 3, 3),
    ]


def test_lpips_is_zero_for_identical_images(lpips_weights, images):
    results, _ = images
    report = evaluate(
        results,
        results,
        metrics=["lpips"],
        device="cpu",
        metric_options={"lpips": {"pretrained_model_path": str(lpips_weights)}},
    )
    assert report["lpips"].per_image == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_one_metric_model_at_a_time(musiq_weights, images, monkeypatch):
    results, references = images
    created = []
    original = pyiqa.create_metric

    def create_metric(name, **kwargs):
        assert all(reference() is None for reference in created), "the previous metric model is still alive"
        metric = original(name, **kwargs)
        created.append(weakref.ref(metric))
        return metric

    monkeypatch.setattr(pyiqa, "create_metric", create_metric)
    options = {"musiq": {"pretrained_model_path": str(musiq_weights)}}
    evaluate(results, references, metrics=["musiq", "psnr", "ssim"], device="cpu", metric_options=options)
    assert len(created) == 3 and created[-1]() is None


# --- Checks before loading, and the messages when weights are missing ----------------------------------------------


def test_metric_names_are_checked_against_pyiqa():
    assert check_metrics(["lpips", "musiq", "maniqa-pipal", "psnr"], with_references=True) == {
        "lpips": (True, True), "musiq": (False, False), "maniqa-pipal": (False, False), "psnr": (True, False)
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown pyiqa metric 'musiqq'; close: musiq"):
        check_metrics(["musiqq"], with_references=False)
    with pytest.raises(ValueError, match="metric 'lpips' compares with references"):
        check_metrics(["lpips"], with_references=False)
    with pytest.raises(ValueError, match="metric 'fid' compares with references"):
        check_metrics(["fid"], with_references=False)
    with pytest.raises(ValueError, match="metric 'psnr' is named twice"):
        check_metrics(["psnr", "psnr"], with_references=True)


def test_the_default_metrics_are_the_papers_as_pyiqa_names():
    assert evaluation.DEFAULT_METRICS == ("lpips", "musiq", "maniqa-pipal", "clipiqa+_vitL14_512", "liqe")
    assert set(check_metrics(list(evaluation.DEFAULT_METRICS), with_references=True)) == set(
        evaluation.DEFAULT_METRICS
    )


def test_errors_come_before_any_metric_loads(images, tmp_path, monkeypatch):
    results, references = images
    monkeypatch.setattr(pyiqa, "create_metric", lambda *args, **kwargs: pytest.fail("a metric was created"))
    other_size = write_image(tmp_path / "gt2" / "0.png", random_pixels(10, 10, seed=0))

    with pytest.raises(ValueError, match=f"{results[0]} is 48x40 but its reference {other_size} is 10x10"):
        evaluate(results[:1], [other_size], metrics=["psnr"], device="cpu")
    with pytest.raises(ValueError, match="no result for the references"):
        evaluate(results[:1], references, metrics=["psnr"], device="cpu")
    with pytest.raises(ValueError, match="metric_options names 'lpips', which is not among the metrics musiq"):
        evaluate(results, metrics=["musiq"], device="cpu", metric_options={"lpips": {}})
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        evaluate(results, metrics=["musiq"], batch_size=0)
    with pytest.raises(TypeError, match="sequences of image paths"):
        evaluate(str(results[0]), metrics=["musiq"])


def test_weights_that_cannot_be_downloaded_give_one_line_naming_the_file(torch_hub, images):
    results, _ = images
    with pytest.raises(MetricUnavailableError) as error:
        evaluate(results, metrics=["musiq"], device="cpu")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("metric 'musiq' needs https://huggingface.co/chaofengc/IQA-PyTorch-Weights/")
    assert f"it looks for musiq_koniq_ckpt-e95806b9.pth in {torch_hub / 'pyiqa'}; put the file there" in message
    assert "or pass a local file (`pretrained_model_path`)" in message  # the parameter; the command says --weights


def test_lpips_backbone_that_cannot_be_downloaded_names_torchvisions_file(torch_hub, tmp_path, images):
    results, references = images
    lins = tmp_path / "lins.pth"
    torch.save({}, lins)
    with pytest.raises(MetricUnavailableError) as error:
        evaluate(
            results,
            references,
            metrics=["lpips"],
            device="cpu",
            metric_options={"lpips": {"pretrained_model_path": str(lins)}},
        )
    assert f"it looks for {ALEXNET_FILE} in {torch_hub / 'checkpoints'}; put the file there" in str(error.value)


def test_a_hub_download_in_offline_mode_names_the_file(images, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    results, _ = images
    with pytest.raises(MetricUnavailableError) as error:
        evaluate(results, metrics=["maniqa-pipal"], device="cpu")
    message = str(error.value)
    assert message.startswith("metric 'maniqa-pipal' needs https://huggingface.co/timm/vit_base_patch8_224")
    assert "Hugging Face cache" in message and "\n" not in message


def test_a_bad_local_weights_file_is_one_line(images, tmp_path):
    results, _ = images
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailableError, match=f"metric 'musiq' cannot load its weights from {broken}"):
        evaluate(
            results, metrics=["musiq"], device="cpu", metric_options={"musiq": {"pretrained_model_path": str(broken)}}
        )
