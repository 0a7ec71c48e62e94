# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Weights load from safetensors only unless the caller allows pickle files (`safe_loading`): a folder with only
pickle weights is refused, before anything is read, with the way to convert it or allow it."""

import re
from pathlib import Path

import pytest
import torch

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline
from diffusers_dit4sr.safe_loading import pickle_only_weights
from diffusers_dit4sr.tiny import make_tiny_pipeline, make_tiny_transformer


@pytest.fixture(scope="module")
def pickled_pipeline(tmp_path_factory) -> Path:
    """The tiny pipeline saved with pickle weights where Diffusers still writes them (the transformer, the VAE)."""
    path = tmp_path_factory.mktemp("pickled") / "pipeline"
    make_tiny_pipeline().save_pretrained(path, safe_serialization=False)
    return path


def test_a_pipeline_folder_with_pickle_weights_only_is_refused_and_can_be_converted(pickled_pipeline, tmp_path):
    pickles = ["transformer/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin"]
    assert [str(path) for path in pickle_only_weights(pickled_pipeline)] == pickles
    message = (
        f"{pickled_pipeline} holds weights only as pickle files ({', '.join(pickles)}), which can run any code when "
        "they are loaded"
    )
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        StableDiffusion3SRPipeline.from_pretrained(pickled_pipeline)
    assert f"StableDiffusion3SRPipeline.from_pretrained({str(pickled_pipeline)!r}, allow_pickle=True)" in str(
        error.value
    )

    allowed = StableDiffusion3SRPipeline.from_pretrained(pickled_pipeline, allow_pickle=True)
    allowed.save_pretrained(tmp_path / "converted")  # the conversion the message gives
    assert pickle_only_weights(tmp_path / "converted") == [] and not list((tmp_path / "converted").rglob("*.bin"))
    converted = StableDiffusion3SRPipeline.from_pretrained(tmp_path / "converted")
    for name, tensor in allowed.transformer.state_dict().items():
        torch.testing.assert_close(converted.transformer.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_transformer_folder_with_pickle_weights_only_is_refused(pickled_pipeline):
    with pytest.raises(
        ValueError, match=r"transformer holds weights only as pickle files \(diffusion_pytorch_model.bin\)"
    ):
        DiT4SRTransformer2DModel.from_pretrained(pickled_pipeline / "transformer")
    with pytest.raises(
        ValueError, match=r"from_pretrained\('.*pipeline', subfolder='transformer', allow_pickle=True\)"
    ):
        DiT4SRTransformer2DModel.from_pretrained(pickled_pipeline, subfolder="transformer")
    model = DiT4SRTransformer2DModel.from_pretrained(pickled_pipeline, subfolder="transformer", allow_pickle=True)
    assert isinstance(model, DiT4SRTransformer2DModel)


def test_safetensors_beside_pickle_files_load_and_only_safetensors_are_read(tmp_path):
    model = make_tiny_transformer()
    model.save_pretrained(tmp_path / "both")
    torch.save({"not": "read"}, tmp_path / "both" / "diffusion_pytorch_model.bin")
    assert pickle_only_weights(tmp_path / "both") == []
    loaded = DiT4SRTransformer2DModel.from_pretrained(tmp_path / "both")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert pickle_only_weights(tmp_path / "missing") == [] and pickle_only_weights("acceptee/DiT4SR") == []
