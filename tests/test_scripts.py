# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`scripts/convert_dit4sr_to_diffusers.py` and `scripts/make_tiny_pipeline.py`, offline on tiny stand-ins.

The stand-ins mirror the real inputs: an SD3.5-medium-like `StableDiffusion3Pipeline` folder, and a folder laid out
like `acceptee/DiT4SR` (an SD3 config without DiT4SR keys, and unused text projections in `attn2`).
"""

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from huggingface_hub import ModelCard
from huggingface_hub.errors import GatedRepoError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffusers_dit4sr import StableDiffusion3SRPipeline, hub
from diffusers_dit4sr.captioning import Captioner
from diffusers_dit4sr.tiny import (
    TINY_TRANSFORMER_CONFIG,
    make_tiny_text_encoders,
    make_tiny_transformer,
    make_tiny_vae,
)

from .utils import hub_http_error, wrapped

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
UNUSED_ATTN2_LAYERS = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
RELEASED_SEEDS = {"q": 1, "f": 2, "r1": 4}


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def convert() -> ModuleType:
    return load_script("convert_dit4sr_to_diffusers")


@pytest.fixture(scope="module")
def sd35(tmp_path_factory) -> SimpleNamespace:
    """A tiny SD3.5-medium-like pipeline folder (its own SD3 transformer, which the conversion replaces)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        transformer = SD3Transformer2DModel(**TINY_TRANSFORMER_CONFIG).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=make_tiny_vae(seed=3),
        **make_tiny_text_encoders(seed=3),
    )
    path = tmp_path_factory.mktemp("sd35") / "stable-diffusion-3.5-medium"
    pipe.save_pretrained(path)
    return SimpleNamespace(path=path, pipe=pipe)


def released_transformer_weights(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights as published, the weights a DiT4SR model keeps): the published ones add `attn2` text projections."""
    used = {name: tensor.contiguous() for name, tensor in make_tiny_transformer(seed).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    dim = TINY_TRANSFORMER_CONFIG["num_attention_heads"] * TINY_TRANSFORMER_CONFIG["attention_head_dim"]
    head_dim = TINY_TRANSFORMER_CONFIG["attention_head_dim"]
    published = dict(used)
    for block in TINY_TRANSFORMER_CONFIG["dual_attention_layers"]:
        prefix = f"transformer_blocks.{block}.attn2"
        for layer in UNUSED_ATTN2_LAYERS:
            published[f"{prefix}.{layer}.weight"] = torch.randn(dim, dim, generator=generator)
            published[f"{prefix}.{layer}.bias"] = torch.randn(dim, generator=generator)
        for norm in ("norm_added_q", "norm_added_k"):
            published[f"{prefix}.{norm}.weight"] = torch.randn(head_dim, generator=generator)
    return published, used


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> SimpleNamespace:
    """A folder laid out like `acceptee/DiT4SR`: `dit4sr_{q,f,r1}/transformer` with SD3 configs."""
    root = tmp_path_factory.mktemp("released") / "DiT4SR"
    used_weights = {}
    for variant, seed in RELEASED_SEEDS.items():
        folder = root / f"dit4sr_{variant}" / "transformer"
        folder.mkdir(parents=True)
        published, used_weights[variant] = released_transformer_weights(seed)
        assert all("control" not in name or tensor.abs().sum() > 0 for name, tensor in published.items())
        save_file(published, folder / "diffusion_pytorch_model.safetensors")
        config = {
            "_class_name": "SD3Transformer2DModel",
            "_diffusers_version": "0.31.0.dev0",
            **TINY_TRANSFORMER_CONFIG,
        }
        (folder / "config.json").write_text(json.dumps(config))
    return SimpleNamespace(path=root, weights=used_weights)


def convert_args(sd35, released, output_dir, *extra: str) -> list[str]:
    return [
        "--sd3_model", str(sd35.path),
        "--dit4sr_model", str(released.path),
        "--output_dir", str(output_dir),
        "--local_files_only",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def converted(convert, sd35, released, tmp_path_factory) -> SimpleNamespace:
    """The `q` variant converted with the default dtype (bf16), and the pipeline loaded back from it."""
    output_dir = tmp_path_factory.mktemp("converted") / "dit4sr-q"
    exit_code = convert.main(convert_args(sd35, released, output_dir))
    assert exit_code == 0
    pipe = StableDiffusion3SRPipeline.from_pretrained(output_dir, dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    return SimpleNamespace(path=output_dir, pipe=pipe)


def assert_state_dicts_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert torch.equal(actual[name], tensor), name


def tiny_upscale(pipe: StableDiffusion3SRPipeline) -> np.ndarray:
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    return pipe(
        image=image,
        prompt="a cat",
        num_inference_steps=1,
        process_size=64,
        tile_size=64,
        tile_overlap=16,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images


class TestConvert:
    def test_writes_one_complete_pipeline_folder(self, converted):
        folder = converted.path
        model_index = json.loads((folder / "model_index.json").read_text())
        assert model_index["_class_name"] == ["pipeline_dit4sr", "StableDiffusion3SRPipeline"]
        assert (folder / "pipeline_dit4sr.py").is_file()  # what DiffusionPipeline.from_pretrained imports
        assert model_index["transformer"] == ["diffusers_dit4sr.models.transformer_dit4sr", "DiT4SRTransformer2DModel"]
        transformer_config = json.loads((folder / "transformer" / "config.json").read_text())
        assert transformer_config["_class_name"] == "DiT4SRTransformer2DModel"
        assert transformer_config["lr_key_source"] == "noise"

        card = ModelCard.load(folder / "README.md")
        assert card.data.library_name == "diffusers" and "dit4sr-q" in card.data.tags
        assert f"--model {folder}" in card.text

    def test_weights_are_safetensors_in_the_requested_dtype(self, converted):
        weight_files = sorted(converted.path.rglob("*.safetensors"))
        assert {path.parent.name for path in weight_files} == {"transformer", "vae", *TEXT_ENCODERS}
        assert not list(converted.path.rglob("*.bin"))
        for path in weight_files:
            with safe_open(path, framework="pt") as weights:
                assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"BF16"}, path

    def test_transformer_holds_the_released_weights(self, converted, released):
        expected = {name: tensor.to(torch.bfloat16) for name, tensor in released.weights["q"].items()}
        on_disk = load_file(converted.path / "transformer" / "diffusion_pytorch_model.safetensors")
        assert_state_dicts_equal(on_disk, expected)
        assert_state_dicts_equal(converted.pipe.transformer.state_dict(), expected)

    def test_other_components_are_the_sd35_ones(self, converted, sd35):
        for name in ("vae", *TEXT_ENCODERS):
            expected = {key: value.to(torch.bfloat16) for key, value in getattr(sd35.pipe, name).state_dict().items()}
            assert_state_dicts_equal(getattr(converted.pipe, name).state_dict(), expected)
        for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            assert getattr(converted.pipe, name).get_vocab() == getattr(sd35.pipe, name).get_vocab(), name
        settings = [
            {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
            for pipe in (converted.pipe, sd35.pipe)
        ]
        assert settings[0] == settings[1]

    @pytest.mark.slow
    def test_upscales_like_the_pipeline_composed_from_the_released_folders(self, converted, sd35, released):
        composed = StableDiffusion3SRPipeline.from_released(
            "q", sd3_model=str(sd35.path), dit4sr_model=str(released.path), dtype=torch.bfloat16
        )
        composed.set_progress_bar_config(disable=True)
        expected = tiny_upscale(composed)
        assert expected.shape == (1, 64, 64, 3)
        np.testing.assert_array_equal(tiny_upscale(converted.pipe), expected)

    @pytest.mark.slow
    def test_r1_is_converted_with_its_own_lr_keys(self, convert, sd35, released, tmp_path):
        """The converted config records `lr_key_source="lr"`, so the folder loads as r1 under any name."""
        output_dir = tmp_path / "my-upscaler"
        assert convert.main([*convert_args(sd35, released, output_dir), "--variant", "r1", "--dtype", "fp32"]) == 0
        transformer_config = json.loads((output_dir / "transformer" / "config.json").read_text())
        assert transformer_config["lr_key_source"] == "lr"
        assert "dit4sr-r1" in ModelCard.load(output_dir / "README.md").data.tags

        pipe = StableDiffusion3SRPipeline.from_pretrained(output_dir)
        pipe.set_progress_bar_config(disable=True)
        assert pipe.transformer.config.lr_key_source == "lr"
        assert_state_dicts_equal(pipe.transformer.state_dict(), released.weights["r1"])
        composed = StableDiffusion3SRPipeline.from_released(
            "r1", sd3_model=str(sd35.path), dit4sr_model=str(released.path)
        )
        composed.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(tiny_upscale(pipe), tiny_upscale(composed))

    @pytest.mark.parametrize(
        "case", ["no dit4sr folder", "no such variant", "sd3 folder without pipeline", "used output"]
    )
    def test_bad_folders_give_one_error_line(self, convert, sd35, released, tmp_path, capsys, case):
        sd3_model, dit4sr_model, output_dir = sd35.path, released.path, tmp_path / "out"
        if case == "no dit4sr folder":
            dit4sr_model = tmp_path / "no-such-folder"
            expected = ["--dit4sr_model", str(dit4sr_model)]
        elif case == "no such variant":
            dit4sr_model = tmp_path / "only-q"
            shutil.copytree(released.path / "dit4sr_q", dit4sr_model / "dit4sr_q")
            expected = ["--dit4sr_model", str(dit4sr_model), "dit4sr_f/transformer/config.json"]
        elif case == "sd3 folder without pipeline":
            sd3_model = released.path
            expected = ["--sd3_model", str(sd3_model), "model_index.json"]
        else:
            output_dir.mkdir()
            (output_dir / "old.txt").write_text("an earlier run")
            expected = ["--output_dir", str(output_dir)]

        args = convert_args(SimpleNamespace(path=sd3_model), SimpleNamespace(path=dit4sr_model), output_dir)
        assert convert.main([*args, "--variant", "f"]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert all(part in lines[0] for part in expected), lines[0]
        assert output_dir.exists() == (case == "used output")

    def test_push_to_hub_needs_a_namespace(self, convert, sd35, released, tmp_path, capsys):
        with pytest.raises(SystemExit) as exit_info:
            convert.main([*convert_args(sd35, released, tmp_path / "out"), "--push_to_hub", "dit4sr-q"])
        assert exit_info.value.code == 2
        assert "NAMESPACE/NAME" in capsys.readouterr().err

    def test_gated_model_says_to_log_in(self, convert, sd35, released, tmp_path, capsys, monkeypatch):
        def refuse(*args, **kwargs):
            url = "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/resolve/main/model_index.json"
            raise wrapped(hub_http_error(GatedRepoError, 401, url))

        monkeypatch.setattr(StableDiffusion3SRPipeline, "from_released", refuse)
        assert convert.main(convert_args(sd35, released, tmp_path / "out")) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: could not load")
        assert "gated" in lines[0] and "hf auth login" in lines[0]

    def test_push_to_hub_uploads_the_verified_pipeline(self, convert, sd35, released, tmp_path, monkeypatch):
        uploads = []

        def upload_folder(self, working_dir, repo_id, **kwargs):
            shutil.copytree(working_dir, tmp_path / "uploaded")
            uploads.append({"repo_id": repo_id, **kwargs})
            return "https://huggingface.co/someone/dit4sr-f/commit/0123abcd"

        monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))
        monkeypatch.setattr(StableDiffusion3SRPipeline, "_upload_folder", upload_folder)
        output_dir = tmp_path / "dit4sr-f"
        args = convert_args(sd35, released, output_dir, "--variant", "f", "--dtype", "fp32")
        assert convert.main([*args, "--push_to_hub", "someone/dit4sr-f"]) == 0

        assert len(uploads) == 1 and uploads[0]["repo_id"] == "someone/dit4sr-f"
        uploaded = tmp_path / "uploaded"
        readme = (uploaded / "README.md").read_text(encoding="utf-8")
        assert readme == (output_dir / "README.md").read_text(encoding="utf-8")
        assert 'from_pretrained("someone/dit4sr-f"' in readme and "`dit4sr_f`" in readme
        # fp32 keeps the released weights bit for bit.
        on_hub = load_file(uploaded / "transformer" / "diffusion_pytorch_model.safetensors")
        assert_state_dicts_equal(on_hub, released.weights["f"])


@pytest.mark.parametrize("with_t5", [True, False])
def test_make_tiny_pipeline_writes_a_runnable_folder(tmp_path, capsys, with_t5):
    script = load_script("make_tiny_pipeline")
    output_dir = tmp_path / "tiny"
    assert script.main([str(output_dir), "--seed", "1", *([] if with_t5 else ["--no-t5"])]) == 0
    out = capsys.readouterr().out
    assert str(output_dir) in out and f"dit4sr-upscale photo.png --model {output_dir}" in out

    pipe = StableDiffusion3SRPipeline.from_pretrained(output_dir)
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.text_encoder_3 is not None) == with_t5
    image = tiny_upscale(pipe)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


def test_make_tiny_pipeline_can_also_write_a_captioner(tmp_path, capsys):
    script = load_script("make_tiny_pipeline")
    output_dir, captioner_dir = tmp_path / "tiny", tmp_path / "tiny-captioner"
    assert script.main([str(output_dir), "--with-captioner", str(captioner_dir)]) == 0
    out = capsys.readouterr().out
    assert f"--model {output_dir} --caption-model {captioner_dir}" in out

    with Captioner(captioner_dir, max_new_tokens=4, device="cpu") as captioner:
        (caption,) = captioner(PIL.Image.new("RGB", (64, 48), "orange"))
    assert isinstance(caption, str) and caption
    assert (output_dir / "model_index.json").is_file()
