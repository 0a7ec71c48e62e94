# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` and our own class load saved pipelines (folder and
Hub repo, with and without the loader module) into the same `StableDiffusion3SRPipeline`."""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines import pipeline_utils
from diffusers.utils import dynamic_modules_utils

from diffusers_dit4sr import StableDiffusion3SRPipeline
from diffusers_dit4sr.pipelines.remote_code import LOADER_MODULE, LOADER_SOURCE

REPO_ID = "someone/dit4sr-tiny"
LIST_CLASS_NAME = [LOADER_MODULE, "StableDiffusion3SRPipeline"]
MISSING_LIBRARY = "This DiT4SR pipeline needs the diffusers-dit4sr library: pip install diffusers-dit4sr"
FAST = {"num_inference_steps": 2, "process_size": 64, "tile_size": 64, "tile_overlap": 32, "output_type": "pt"}


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved-pipeline")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def modules_cache(monkeypatch, tmp_path):
    """Diffusers copies remote code into its modules cache (and puts that on `sys.path`): keep both to this test."""
    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))


def upscale(pipe) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    pixels = np.random.default_rng(0).integers(0, 256, (11, 13, 3), dtype=np.uint8)
    return pipe(image=PIL.Image.fromarray(pixels), generator=torch.Generator().manual_seed(0), **FAST).images


def copy_folder(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


class TestSavedFolder:
    def test_holds_the_loader_module_named_by_the_index(self, saved):
        index = json.loads((saved / "model_index.json").read_text())
        assert index["_class_name"] == LIST_CLASS_NAME
        assert index["transformer"] == ["diffusers_dit4sr.models.transformer_dit4sr", "DiT4SRTransformer2DModel"]
        assert (saved / f"{LOADER_MODULE}.py").read_text(encoding="utf-8") == LOADER_SOURCE
        assert not list(saved.glob(".*.tmp"))

    def test_both_loaders_give_our_class_and_identical_images(self, pipe, saved):
        generic = DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
        ours = StableDiffusion3SRPipeline.from_pretrained(saved)
        assert type(generic) is StableDiffusion3SRPipeline and type(ours) is StableDiffusion3SRPipeline
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            expected, actual = getattr(ours, name).state_dict(), getattr(generic, name).state_dict()
            assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
        from_generic, from_ours = upscale(generic), upscale(ours)
        assert from_generic.shape == (1, 3, 44, 52)
        assert torch.equal(from_generic, from_ours)
        torch.testing.assert_close(from_ours, upscale(pipe), rtol=0, atol=1e-5)

    def test_a_loaded_pipeline_saves_the_same_index(self, saved, tmp_path):
        StableDiffusion3SRPipeline.from_pretrained(saved).save_pretrained(tmp_path)
        index = json.loads((tmp_path / "model_index.json").read_text())
        assert index.pop("_name_or_path") == str(saved)  # Diffusers records where it was loaded from
        assert index == json.loads((saved / "model_index.json").read_text())
        assert (tmp_path / f"{LOADER_MODULE}.py").is_file()

    def test_generic_loader_without_trust_remote_code_is_refused(self, saved):
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            DiffusionPipeline.from_pretrained(saved)

    def test_our_class_runs_no_code_from_the_folder(self, saved, tmp_path):
        folder = copy_folder(saved, tmp_path / "tampered")
        (folder / f"{LOADER_MODULE}.py").write_text('raise RuntimeError("the loader module was executed")\n')
        assert type(StableDiffusion3SRPipeline.from_pretrained(folder)) is StableDiffusion3SRPipeline
        with pytest.raises(RuntimeError, match="the loader module was executed"):
            DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)

    def test_missing_library_is_one_line_naming_pip_install(self, saved, monkeypatch):
        # `None` in sys.modules makes `import diffusers_dit4sr` fail as if the library were not installed.
        monkeypatch.setitem(sys.modules, "diffusers_dit4sr", None)
        with pytest.raises(ImportError) as raised:
            DiffusionPipeline.from_pretrained(saved, trust_remote_code=True)
        assert str(raised.value) == MISSING_LIBRARY
        assert raised.value.__cause__ is None and raised.value.__suppress_context__

    def test_subclass_keeps_its_plain_class_name(self, pipe, tmp_path):
        class MySRPipeline(StableDiffusion3SRPipeline):
            pass

        MySRPipeline(**pipe.components).save_pretrained(tmp_path)
        assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == "MySRPipeline"
        assert not (tmp_path / f"{LOADER_MODULE}.py").exists()


class TestOldLayout:
    """Folders written before the loader module: a plain `_class_name` and no `pipeline_dit4sr.py`."""

    @pytest.fixture
    def old_folder(self, saved, tmp_path) -> Path:
        folder = copy_folder(saved, tmp_path / "old")
        (folder / f"{LOADER_MODULE}.py").unlink()
        index = json.loads((folder / "model_index.json").read_text())
        (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusion3SRPipeline"}))
        return folder

    def test_our_class_loads_it(self, pipe, old_folder):
        loaded = StableDiffusion3SRPipeline.from_pretrained(old_folder)
        torch.testing.assert_close(upscale(loaded), upscale(pipe), rtol=0, atol=1e-5)

    def test_saving_it_again_adds_the_loader(self, old_folder, tmp_path):
        StableDiffusion3SRPipeline.from_pretrained(old_folder).save_pretrained(tmp_path / "new")
        assert json.loads((tmp_path / "new" / "model_index.json").read_text())["_class_name"] == LIST_CLASS_NAME
        assert type(DiffusionPipeline.from_pretrained(tmp_path / "new", trust_remote_code=True)).__name__ == (
            "StableDiffusion3SRPipeline"
        )


@pytest.fixture
def fake_hub(monkeypatch, saved):
    """Serves the saved folder as the Hub repository `REPO_ID` to Diffusers' downloads (no network)."""
    files = [path.relative_to(saved).as_posix() for path in saved.rglob("*") if path.is_file()]
    downloads = []

    def model_info(repo_id, **kwargs):
        assert repo_id == REPO_ID
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=name) for name in files], sha="0" * 40)

    def hf_hub_download(repo_id, filename, **kwargs):
        assert repo_id == REPO_ID
        downloads.append(filename)
        return str(saved / filename)

    monkeypatch.setattr(pipeline_utils, "_resolve_revision", lambda name, revision=None, **kwargs: revision)
    for module in (pipeline_utils, dynamic_modules_utils):
        monkeypatch.setattr(module, "model_info", model_info)
        monkeypatch.setattr(module, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(pipeline_utils, "snapshot_download", lambda repo_id, **kwargs: str(saved))
    return SimpleNamespace(files=files, downloads=downloads)


class TestHubRepository:
    def test_both_loaders_load_a_hub_repository(self, fake_hub):
        assert f"{LOADER_MODULE}.py" in fake_hub.files
        ours = StableDiffusion3SRPipeline.from_pretrained(REPO_ID)
        assert type(ours) is StableDiffusion3SRPipeline
        assert f"{LOADER_MODULE}.py" not in fake_hub.downloads

        with pytest.raises(ValueError, match="trust_remote_code=True"):
            DiffusionPipeline.from_pretrained(REPO_ID)
        generic = DiffusionPipeline.from_pretrained(REPO_ID, trust_remote_code=True)
        assert type(generic) is StableDiffusion3SRPipeline
        assert f"{LOADER_MODULE}.py" in fake_hub.downloads
        assert torch.equal(upscale(generic), upscale(ours))
