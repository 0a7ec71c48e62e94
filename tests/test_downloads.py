# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`diffusers_dit4sr.downloads`: the released pipeline downloaded into plain folders, once, at one commit per
repository; the Hub replaced by local copies of the two repositories laid out as released (no network)."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub.errors import GatedRepoError
from huggingface_hub.utils import filter_repo_objects

from diffusers_dit4sr import StableDiffusion3SRPipeline, downloads
from diffusers_dit4sr.downloads import (
    REVISION_FILE,
    download_commands,
    download_released,
    released_folders,
)
from diffusers_dit4sr.hub import RELEASED_DIT4SR_MODEL, RELEASED_SD3_MODEL, HubLoadError
from diffusers_dit4sr.tiny import make_tiny_pipeline

from .utils import hub_http_error

FIRST_COMMIT, SECOND_COMMIT = "1" * 40, "2" * 40


@pytest.fixture(scope="module")
def remote_repos(tmp_path_factory) -> dict[str, Path]:
    """The two repositories as the Hub holds them: SD3.5-medium with its own transformer, single-file checkpoints and
    `.bin` copies beside the Diffusers folders; DiT4SR with a transformer per variant."""
    root = tmp_path_factory.mktemp("hub")
    sd3, dit4sr = root / "sd3", root / "dit4sr"
    make_tiny_pipeline(seed=0).save_pretrained(sd3)
    (sd3 / "sd3.5_medium.safetensors").write_bytes(b"single-file checkpoint")
    (sd3 / "text_encoders").mkdir()
    (sd3 / "text_encoders" / "clip_g.safetensors").write_bytes(b"single-file text encoder")
    (sd3 / "text_encoder" / "pytorch_model.bin").write_bytes(b"pickled copy")
    for variant in ("q", "f", "r1"):
        shutil.copytree(sd3 / "transformer", dit4sr / f"dit4sr_{variant}" / "transformer")
    return {RELEASED_SD3_MODEL: sd3, RELEASED_DIT4SR_MODEL: dit4sr}


@pytest.fixture
def hub(monkeypatch, remote_repos):
    """`snapshot_download` copies the matching files of a local repository (filtered as huggingface_hub filters);
    `HfApi.repo_info` says `main` is at `hub.main`. Both record their calls."""
    state = SimpleNamespace(main=FIRST_COMMIT, downloads=[], resolved=[], error=None)

    def snapshot_download(repo_id, *, revision, local_dir, allow_patterns, ignore_patterns, token):
        state.downloads.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        if state.error is not None:
            raise state.error
        source = remote_repos[repo_id]
        files = [str(path.relative_to(source)) for path in source.rglob("*") if path.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, Path(local_dir) / name)
        return str(local_dir)

    class HfApi:
        def __init__(self, token=None):
            pass

        def repo_info(self, repo_id):
            state.resolved.append(repo_id)
            return SimpleNamespace(sha=state.main)

    monkeypatch.setattr(downloads, "snapshot_download", snapshot_download)
    monkeypatch.setattr(downloads, "HfApi", HfApi)
    return state


def test_download_fetches_only_what_the_pipeline_reads_and_loads(hub, tmp_path):
    folders = download_released(tmp_path, "r1")

    assert folders == released_folders(tmp_path, "r1")
    assert folders.sd3 == tmp_path / "stable-diffusion-3.5-medium" and folders.dit4sr == tmp_path / "DiT4SR"
    assert folders.missing() == []
    sd3_files = {str(path.relative_to(folders.sd3)) for path in folders.sd3.rglob("*") if path.is_file()}
    assert "model_index.json" in sd3_files and "vae/diffusion_pytorch_model.safetensors" in sd3_files
    assert not [name for name in sd3_files if name.startswith(("transformer/", "text_encoders/")) or ".bin" in name]
    assert "sd3.5_medium.safetensors" not in sd3_files
    assert sorted(path.name for path in folders.dit4sr.iterdir() if path.is_dir()) == ["dit4sr_r1"]
    assert [(call["repo_id"], call["revision"]) for call in hub.downloads] == [
        (RELEASED_SD3_MODEL, FIRST_COMMIT),
        (RELEASED_DIT4SR_MODEL, FIRST_COMMIT),
    ]
    record = json.loads((folders.dit4sr / REVISION_FILE).read_text())
    assert record == {"repo_id": RELEASED_DIT4SR_MODEL, "revision": FIRST_COMMIT}

    pipe = StableDiffusion3SRPipeline.from_released(
        "r1", sd3_model=str(folders.sd3), dit4sr_model=str(folders.dit4sr), local_files_only=True
    )
    assert pipe.transformer.config.lr_key_source == "lr"  # r1's attention, from the released variant
    reference = make_tiny_pipeline(seed=0).transformer.state_dict()
    assert all(torch.equal(value, reference[name]) for name, value in pipe.transformer.state_dict().items())


def test_complete_folders_are_used_without_asking_the_hub(hub, tmp_path):
    download_released(tmp_path, "q")
    hub.downloads.clear(), hub.resolved.clear()

    assert download_released(tmp_path, "q").missing() == []
    assert hub.downloads == [] and hub.resolved == []


def test_later_downloads_into_a_folder_keep_its_first_commit(hub, tmp_path):
    download_released(tmp_path, "q")
    hub.main = SECOND_COMMIT  # the repositories moved on
    hub.downloads.clear(), hub.resolved.clear()

    download_released(tmp_path, "f")

    # SD3.5 is complete; DiT4SR's new variant comes from the commit the folder was first downloaded at.
    assert [(call["repo_id"], call["revision"]) for call in hub.downloads] == [(RELEASED_DIT4SR_MODEL, FIRST_COMMIT)]
    assert hub.downloads[0]["allow_patterns"] == ["dit4sr_f/transformer/*"]
    assert hub.resolved == []


def test_pinned_revisions_are_downloaded_as_given(hub, tmp_path):
    pins = {RELEASED_SD3_MODEL: "a" * 40, RELEASED_DIT4SR_MODEL: "b" * 40}
    download_released(tmp_path, "q", revisions=pins)

    assert [call["revision"] for call in hub.downloads] == ["a" * 40, "b" * 40]
    assert hub.resolved == []


def test_a_missing_shard_or_config_is_missing(hub, tmp_path):
    folders = download_released(tmp_path, "q")
    (folders.transformer / "config.json").unlink()
    encoder = folders.sd3 / "text_encoder_3"
    weights = next(encoder.glob("*.safetensors"))
    weights.rename(encoder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (encoder / "model.safetensors.index.json").write_text(json.dumps(index))

    assert folders.missing() == [encoder / "model-00002-of-00002.safetensors", folders.transformer / "config.json"]


def test_hub_failures_name_the_repository_and_the_cause(hub, tmp_path):
    hub.error = hub_http_error(GatedRepoError, 403)

    with pytest.raises(HubLoadError, match="gated repository") as raised:
        download_released(tmp_path, "q")
    assert RELEASED_SD3_MODEL in str(raised.value) and str(tmp_path) in str(raised.value)


def test_offline_an_incomplete_folder_is_an_error(hub, tmp_path, monkeypatch):
    """Offline, `snapshot_download` returns a non-empty local folder as it is: the files still missing say so."""
    download_released(tmp_path, "q")
    monkeypatch.setattr(downloads, "hub_offline_mode", lambda: True)
    hub.downloads.clear()
    monkeypatch.setattr(downloads, "snapshot_download", lambda repo_id, **kwargs: hub.downloads.append(repo_id))

    with pytest.raises(HubLoadError, match=r"HF_HUB_OFFLINE=1 is set \(no downloads\), and .*dit4sr_f.* is missing"):
        download_released(tmp_path, "f")
    assert hub.downloads == [RELEASED_DIT4SR_MODEL]


def test_download_commands_fetch_the_same_files_by_hand(tmp_path):
    sd3_command, dit4sr_command = download_commands(released_folders(tmp_path / "models", "f"))

    assert sd3_command.startswith(f"hf download {RELEASED_SD3_MODEL} ")
    assert '--include "vae/*"' in sd3_command and '--include "text_encoder_3/*"' in sd3_command
    assert "transformer" not in sd3_command
    assert sd3_command.endswith(f'--local-dir "{tmp_path / "models" / "stable-diffusion-3.5-medium"}"')
    assert dit4sr_command == (
        f'hf download {RELEASED_DIT4SR_MODEL} --include "dit4sr_f/transformer/*" '
        f'--local-dir "{tmp_path / "models" / "DiT4SR"}"'
    )


def test_unknown_variant():
    with pytest.raises(ValueError, match=r"`variant` must be one of \('q', 'f', 'r1'\), got 'x'"):
        released_folders("models", "x")
