# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The released variants `dit4sr_q`, `dit4sr_f` and `dit4sr_r1` load with the attention they were trained with.

The released folders carry plain SD3 configs, identical for the three variants; only `dit4sr_r1` needs the LR
tokens' own keys (`lr_key_source="lr"`). Tiny stand-ins in the released layout (the same weights in each variant's
folder, so that only the attention can differ) go through every public loading path: the transformer's
`from_pretrained` (a repository with a subfolder, a Hub id resolved from the local Hub cache, a folder path, renamed
and converted copies), the pipeline's `from_released`, and `dit4sr-upscale --variant`.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import SD3Transformer2DModel
from huggingface_hub import constants
from safetensors.torch import save_file

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline, runtime
from diffusers_dit4sr.cli.main import main as cli_main
from diffusers_dit4sr.hub import RELEASED_VARIANTS, make_model_card
from diffusers_dit4sr.models.attention_processor import DiT4SRAttention
from diffusers_dit4sr.models.released import RELEASED_LR_KEY_SOURCES, released_variant_in_path
from diffusers_dit4sr.tiny import TINY_TRANSFORMER_CONFIG, make_tiny_pipeline, make_tiny_transformer

from .models.dit4sr_oracle import oracle_forward
from .models.utils import make_inputs, relative_error

EXPECTED = {"q": "noise", "f": "noise", "r1": "lr"}
REPO_ID = "acceptee/DiT4SR"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_released_transformer(folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A transformer folder as the authors publish it: SD3's class name and config, no DiT4SR keys."""
    folder.mkdir(parents=True)
    save_file(weights, folder / "diffusion_pytorch_model.safetensors")
    config = {"_class_name": "SD3Transformer2DModel", "_diffusers_version": "0.31.0.dev0", **TINY_TRANSFORMER_CONFIG}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> SimpleNamespace:
    """`DiT4SR/dit4sr_{q,f,r1}/transformer` with one set of weights, the same tree in a Hub cache, and an SD3.5
    stand-in pipeline folder."""
    root = tmp_path_factory.mktemp("released")
    weights = {name: tensor.contiguous() for name, tensor in make_tiny_transformer(seed=1).state_dict().items()}
    snapshot = root / "hub-cache" / "models--acceptee--DiT4SR" / "snapshots" / COMMIT
    for variant in RELEASED_VARIANTS:
        write_released_transformer(root / "DiT4SR" / f"dit4sr_{variant}" / "transformer", weights)
        write_released_transformer(snapshot / f"dit4sr_{variant}" / "transformer", weights)
    (root / "hub-cache" / "models--acceptee--DiT4SR" / "refs").mkdir()
    (root / "hub-cache" / "models--acceptee--DiT4SR" / "refs" / "main").write_text(COMMIT)
    make_tiny_pipeline().save_pretrained(root / "sd35")
    return SimpleNamespace(
        repo=root / "DiT4SR",
        cache=root / "hub-cache",
        sd35=root / "sd35",
        weights=weights,
        inputs=make_inputs(2, 8, 12, seed=3, config=TINY_TRANSFORMER_CONFIG),
    )


def key_sources(model: DiT4SRTransformer2DModel) -> set[str]:
    """The key source every attention module computes with (not only what the config says)."""
    return {module.lr_key_source for module in model.modules() if isinstance(module, DiT4SRAttention)}


def run(model: DiT4SRTransformer2DModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, lr_injection_scale=1.2).sample


def oracle(weights: dict[str, torch.Tensor], key_source: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    config = {**TINY_TRANSFORMER_CONFIG, "lr_key_source": key_source}
    return oracle_forward(
        weights, config, **{name: value.double() for name, value in inputs.items()}, lr_injection_scale=1.2
    )


# --- The rule: which folder names name a variant -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path, subfolder, expected",
    [
        ("acceptee/DiT4SR", "dit4sr_r1/transformer", "r1"),
        ("acceptee/DiT4SR", "dit4sr_q/transformer", "q"),
        ("/models/DiT4SR/dit4sr_f/transformer", None, "f"),
        ("/models/DiT4SR/dit4sr_r1", "transformer", "r1"),
        ("C:\\models\\DiT4SR\\dit4sr_r1\\transformer", None, "r1"),
        ("/models/DiT4SR-R1/transformer", None, "r1"),
        ("/cache/models--acceptee--DiT4SR/snapshots/0123/dit4sr_q/transformer", None, "q"),
        ("/models/my_dit4sr_r1_copy/transformer", None, None),
        ("/models/dit4sr_r2/transformer", None, None),
        ("stabilityai/stable-diffusion-3.5-medium", "transformer", None),
        ("/models/dit4sr_q/dit4sr_q/transformer", None, "q"),
    ],
)
def test_released_variant_in_path(path, subfolder, expected):
    assert released_variant_in_path(path, subfolder) == expected


def test_a_path_naming_two_variants_is_refused():
    with pytest.raises(ValueError, match=r"names the released DiT4SR variants \['q', 'r1'\].*lr_key_source="):
        released_variant_in_path("/models/dit4sr_q/backup", "dit4sr_r1/transformer")


def test_every_released_variant_has_a_key_source_and_a_model_card():
    assert RELEASED_VARIANTS == ("q", "f", "r1") and RELEASED_LR_KEY_SOURCES == EXPECTED
    for variant in RELEASED_VARIANTS:
        card = make_model_card("someone/dit4sr", dit4sr_variant=variant)
        assert f"dit4sr-{variant}" in card.data.tags and f"`dit4sr_{variant}` transformer" in card.text


# --- DiT4SRTransformer2DModel.from_pretrained ----------------------------------------------------------------------


@pytest.mark.parametrize("variant", RELEASED_VARIANTS)
@pytest.mark.parametrize("path", ["repository and subfolder", "folder path", "Hub id from the cache"])
def test_released_folders_load_with_their_attention(released, variant, path):
    if path == "repository and subfolder":
        model = DiT4SRTransformer2DModel.from_pretrained(released.repo, subfolder=f"dit4sr_{variant}/transformer")
    elif path == "folder path":
        model = DiT4SRTransformer2DModel.from_pretrained(released.repo / f"dit4sr_{variant}" / "transformer")
    else:
        model = DiT4SRTransformer2DModel.from_pretrained(
            REPO_ID, subfolder=f"dit4sr_{variant}/transformer", cache_dir=released.cache, local_files_only=True
        )
    assert model.config.lr_key_source == EXPECTED[variant]
    assert key_sources(model) == {EXPECTED[variant]}


def test_r1_computes_the_paper_attention_and_q_the_released_one(released):
    """Same weights: r1 matches the oracle's "lr" keys, q its "noise" keys, and the two differ."""
    q = DiT4SRTransformer2DModel.from_pretrained(released.repo, subfolder="dit4sr_q/transformer")
    r1 = DiT4SRTransformer2DModel.from_pretrained(released.repo, subfolder="dit4sr_r1/transformer")
    output_q, output_r1 = run(q, released.inputs), run(r1, released.inputs)
    assert relative_error(output_r1, oracle(released.weights, "lr", released.inputs)) < 1e-5
    assert relative_error(output_q, oracle(released.weights, "noise", released.inputs)) < 1e-5
    assert relative_error(output_r1, output_q) > 1e-3


def test_a_renamed_copy_is_refused_until_the_key_source_is_given(released, tmp_path):
    copy = tmp_path / "my-upscaler" / "transformer"
    shutil.copytree(released.repo / "dit4sr_r1" / "transformer", copy)
    with pytest.raises(ValueError) as error:
        DiT4SRTransformer2DModel.from_pretrained(copy)
    message = str(error.value)
    assert str(copy) in message and 'lr_key_source="lr"' in message and 'lr_key_source="noise"' in message
    assert "from_transformer" in message

    model = DiT4SRTransformer2DModel.from_pretrained(copy, lr_key_source="lr")
    expected = DiT4SRTransformer2DModel.from_pretrained(released.repo, subfolder="dit4sr_r1/transformer")
    assert key_sources(model) == {"lr"}
    assert torch.equal(run(model, released.inputs), run(expected, released.inputs))


def test_an_explicit_key_source_overrides_the_folder_name(released):
    model = DiT4SRTransformer2DModel.from_pretrained(
        released.repo, subfolder="dit4sr_q/transformer", lr_key_source="lr"
    )
    assert key_sources(model) == {"lr"}


@pytest.mark.parametrize("variant", ["q", "r1"])
def test_a_saved_model_keeps_its_key_source_under_any_name(released, tmp_path, variant):
    """Folders this library writes record `lr_key_source`: the config wins over a misleading folder name."""
    model = DiT4SRTransformer2DModel.from_pretrained(released.repo, subfolder=f"dit4sr_{variant}/transformer")
    misleading = tmp_path / f"dit4sr_{'q' if variant == 'r1' else 'r1'}" / "transformer"
    model.save_pretrained(misleading)
    assert json.loads((misleading / "config.json").read_text())["lr_key_source"] == EXPECTED[variant]
    loaded = DiT4SRTransformer2DModel.from_pretrained(misleading)
    assert key_sources(loaded) == {EXPECTED[variant]}
    assert torch.equal(run(loaded, released.inputs), run(model, released.inputs))


def test_a_plain_sd3_transformer_starts_a_new_model_through_from_transformer(tmp_path):
    folder = tmp_path / "stable-diffusion-3.5-medium" / "transformer"
    SD3Transformer2DModel(**TINY_TRANSFORMER_CONFIG).save_pretrained(folder)
    with pytest.raises(ValueError, match="from_transformer"):
        DiT4SRTransformer2DModel.from_pretrained(folder)

    sd3 = SD3Transformer2DModel.from_pretrained(folder)
    assert key_sources(DiT4SRTransformer2DModel.from_transformer(sd3)) == {"noise"}
    assert key_sources(DiT4SRTransformer2DModel.from_transformer(sd3, lr_key_source="lr")) == {"lr"}


# --- The pipeline and the CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", RELEASED_VARIANTS)
def test_from_released_loads_each_variant_with_its_attention(released, variant):
    pipe = StableDiffusion3SRPipeline.from_released(
        variant, sd3_model=str(released.sd35), dit4sr_model=str(released.repo)
    )
    assert key_sources(pipe.transformer) == {EXPECTED[variant]}


def test_from_released_resolves_the_hub_id_from_the_cache(released):
    pipe = StableDiffusion3SRPipeline.from_released(
        "r1", sd3_model=str(released.sd35), cache_dir=released.cache, local_files_only=True
    )
    assert key_sources(pipe.transformer) == {"lr"}


def test_from_released_rejects_unknown_variants(released):
    with pytest.raises(ValueError, match=r"`variant` must be one of \('q', 'f', 'r1'\), got 'r2'"):
        StableDiffusion3SRPipeline.from_released("r2", sd3_model=str(released.sd35), dit4sr_model=str(released.repo))


@pytest.mark.slow
@pytest.mark.parametrize("variant", [None, "r1"])
def test_cli_variant_loads_the_released_model(released, tmp_path, monkeypatch, variant):
    """`dit4sr-upscale --variant r1` reaches `from_released("r1")`, which gives the r1 attention; no flag gives q."""
    loaded = []
    from_released = StableDiffusion3SRPipeline.from_released.__func__

    def local_from_released(cls, *args, **kwargs):
        pipe = from_released(cls, *args, sd3_model=str(released.sd35), dit4sr_model=str(released.repo), **kwargs)
        loaded.append(pipe)
        return pipe

    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_released", classmethod(local_from_released))
    monkeypatch.setattr(runtime, "hub_unreachable_reason", lambda *args, **kwargs: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    source = tmp_path / "photo.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(source)
    options = ["--steps", "1", "--scale", "2", "--device", "cpu", "--dtype", "fp32", "--process-size", "64"]
    options += ["--tile-size", "64", "--tile-overlap", "32", "--quiet"]
    argv = [str(source), "-o", str(tmp_path / "out"), *options, *(["--variant", variant] if variant else [])]

    assert cli_main(argv) == 0
    assert (tmp_path / "out" / "photo.png").is_file()
    assert len(loaded) == 1 and key_sources(loaded[0].transformer) == {"lr" if variant == "r1" else "noise"}
