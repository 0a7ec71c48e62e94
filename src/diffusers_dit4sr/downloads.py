# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The released DiT4SR pipeline in plain folders of one's choice: downloaded once, at fixed revisions.

`StableDiffusion3SRPipeline.from_released` reads `stabilityai/stable-diffusion-3.5-medium` and `acceptee/DiT4SR`
through the Hugging Face cache. Programs that keep models in a folder tree of their own (ComfyUI's `models/diffusers`)
want them there instead, as folders a user can also fill by hand: `released_folders` names them, `download_released`
fetches what they lack and nothing else (SD3.5-medium's VAE, text encoders, tokenizers and scheduler, without its own
transformer and its single-file checkpoints; one variant's DiT4SR transformer), and `download_commands` says how to do
the same with the `hf` command where this machine cannot. Load them with
`from_released(variant, sd3_model=folders.sd3, dit4sr_model=folders.dit4sr)`.

Each repository is downloaded at one commit: `RELEASED_REVISIONS`, or else the commit its `main` branch points to at
the first download, which is recorded in the folder (`REVISION_FILE`) and used for every later download into it (a
resumed download, another variant), so the files of a folder never mix two versions of a repository.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download

from .constants import RELEASED_DIT4SR_MODEL, RELEASED_SD3_MODEL, RELEASED_VARIANTS
from .hub import HubLoadError, explain_hub_errors, hub_offline_mode

__all__ = [
    "DIT4SR_FOLDER",
    "RELEASED_REVISIONS",
    "REVISION_FILE",
    "SD3_FOLDER",
    "ReleasedFolders",
    "download_commands",
    "download_released",
    "released_folders",
]

SD3_FOLDER = "stable-diffusion-3.5-medium"
DIT4SR_FOLDER = "DiT4SR"
"""The folders the two repositories go into, under a models folder: each named after its repository."""
RELEASED_REVISIONS: dict[str, str | None] = {RELEASED_SD3_MODEL: None, RELEASED_DIT4SR_MODEL: None}
"""The commit each repository is downloaded at; `None`: the commit of `main` at the first download into a folder."""
REVISION_FILE = ".dit4sr-revision.json"
"""Where a folder records the repository and commit its files were downloaded from."""
SD3_FILES = (
    "model_index.json",
    "scheduler/*",
    "text_encoder/*",
    "text_encoder_2/*",
    "text_encoder_3/*",
    "tokenizer/*",
    "tokenizer_2/*",
    "tokenizer_3/*",
    "vae/*",
)
"""What the DiT4SR pipeline reads of SD3.5-medium: not its transformer (DiT4SR brings its own), nor the single-file
checkpoints and `text_encoders/` folder (the same weights again, for other programs)."""
SKIPPED_FILES = ("*.bin", "*.pt", "*.ckpt", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data")
"""Copies of the weights in other formats, which Diffusers does not read when safetensors are there."""


@dataclass(frozen=True)
class ReleasedFolders:
    """Where the released pipeline's two parts are, or go, under one models folder."""

    sd3: Path
    """SD3.5-medium's VAE, text encoders, tokenizers and scheduler (a pipeline folder without its transformer)."""
    dit4sr: Path
    """The DiT4SR repository's layout: `dit4sr_{variant}/transformer` for each variant downloaded."""
    variant: str

    @property
    def transformer(self) -> Path:
        return self.dit4sr / f"dit4sr_{self.variant}" / "transformer"

    def missing(self) -> list[Path]:
        """The files the pipeline needs that are not there yet (none: ready to load, no download needed)."""
        return _missing_in_pipeline(self.sd3, skip=("transformer",)) + _missing_in_component(self.transformer)


def released_folders(root: str | os.PathLike, variant: str = "q") -> ReleasedFolders:
    """The folders of the released pipeline (`variant`: one of `RELEASED_VARIANTS`) under the models folder `root`."""
    if variant not in RELEASED_VARIANTS:
        raise ValueError(f"`variant` must be one of {RELEASED_VARIANTS}, got {variant!r}.")
    root = Path(root)
    return ReleasedFolders(sd3=root / SD3_FOLDER, dit4sr=root / DIT4SR_FOLDER, variant=variant)


def download_released(
    root: str | os.PathLike,
    variant: str = "q",
    *,
    token: str | bool | None = None,
    revisions: dict[str, str | None] | None = None,
) -> ReleasedFolders:
    r"""
    Makes the released pipeline (`variant`) loadable from the models folder `root`: downloads into
    `released_folders(root, variant)` the files that are missing there, and only those. Folders already complete
    (downloaded before, or filled by hand) are used as they are, without asking the Hub.

    Args:
        root (`str` or `os.PathLike`): The models folder, e.g. ComfyUI's `models/diffusers`.
        variant (`str`, defaults to `"q"`): The DiT4SR transformer: `"q"`, `"f"` or `"r1"`.
        token (`str` or `bool`, *optional*): The Hub token; defaults to the stored login. SD3.5-medium is gated.
        revisions (`dict`, *optional*): The commit of each repository, by Hub id; defaults to `RELEASED_REVISIONS`.

    Returns:
        The [`ReleasedFolders`], for `StableDiffusion3SRPipeline.from_released(variant, sd3_model=..., dit4sr_model=...)`.

    Raises:
        [`~diffusers_dit4sr.hub.HubLoadError`] (an `OSError`): a download failed or left files missing; its message
            names the repository, the cause (offline mode, no network, a gated repository without access, ...) and
            the fix. `download_commands` says how to put the files there by hand.
    """
    folders = released_folders(root, variant)
    revisions = {**RELEASED_REVISIONS, **(revisions or {})}
    parts = (
        (RELEASED_SD3_MODEL, folders.sd3, SD3_FILES, _missing_in_pipeline(folders.sd3, skip=("transformer",))),
        (
            RELEASED_DIT4SR_MODEL,
            folders.dit4sr,
            (f"dit4sr_{variant}/transformer/*",),
            _missing_in_component(folders.transformer),
        ),
    )
    for repo_id, folder, files, missing in parts:
        if not missing:
            continue
        what = f"{repo_id} (downloading into {folder})"
        with explain_hub_errors(what, repo_id):
            revision = revisions.get(repo_id) or _recorded_revision(folder, repo_id) or _main_commit(repo_id, token)
            snapshot_download(
                repo_id,
                revision=revision,
                local_dir=folder,
                allow_patterns=list(files),
                ignore_patterns=list(SKIPPED_FILES),
                token=token,
            )
        _record_revision(folder, repo_id, revision)
    missing = folders.missing()
    if missing:
        # An offline `snapshot_download` returns a non-empty folder as it is, whatever it lacks.
        reason = "HF_HUB_OFFLINE=1 is set (no downloads)" if hub_offline_mode() else "the download did not bring it"
        raise HubLoadError(f"the released DiT4SR pipeline into {root}", f"{reason}, and {missing[0]} is missing")
    return folders


def download_commands(folders: ReleasedFolders) -> list[str]:
    """The `hf download` commands (huggingface_hub's command line) that put the files of `folders` in place by hand,
    on a machine that can reach the Hub (copy the folders over afterwards)."""
    commands = []
    for repo_id, folder, files in (
        (RELEASED_SD3_MODEL, folders.sd3, SD3_FILES),
        (RELEASED_DIT4SR_MODEL, folders.dit4sr, (f"dit4sr_{folders.variant}/transformer/*",)),
    ):
        includes = " ".join(f'--include "{pattern}"' for pattern in files)
        revision = RELEASED_REVISIONS.get(repo_id)
        pin = f" --revision {revision}" if revision else ""
        commands.append(f'hf download {repo_id}{pin} {includes} --local-dir "{folder}"')
    return commands


def _main_commit(repo_id: str, token: str | bool | None) -> str:
    return HfApi(token=token).repo_info(repo_id).sha


def _recorded_revision(folder: Path, repo_id: str) -> str | None:
    try:
        record = json.loads((folder / REVISION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("revision") if isinstance(record, dict) and record.get("repo_id") == repo_id else None


def _record_revision(folder: Path, repo_id: str, revision: str) -> None:
    record = json.dumps({"repo_id": repo_id, "revision": revision}, indent=2) + "\n"
    (folder / REVISION_FILE).write_text(record, encoding="utf-8")


def _missing_in_pipeline(folder: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """The files a pipeline folder lacks: `model_index.json`, or what its components (but `skip`) need."""
    index = folder / "model_index.json"
    try:
        components = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [index]
    missing = []
    for name, value in components.items():
        if name.startswith("_") or name in skip or not isinstance(value, list) or value[0] is None:
            continue
        is_model = not str(value[-1]).endswith(_WEIGHTLESS_CLASSES)
        missing += _missing_in_component(folder / name, is_model=is_model)
    return missing


_WEIGHTLESS_CLASSES = ("Tokenizer", "TokenizerFast", "Scheduler")
"""Components whose class name ends so have no weights (tokenizers, schedulers): any file of theirs will do."""


def _missing_in_component(folder: Path, is_model: bool = True) -> list[Path]:
    """What a component folder lacks: everything if it is empty; a model its `config.json` and safetensors weights
    (every shard their index lists)."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return [folder]
    if not is_model:
        return []
    missing = [] if (folder / "config.json").is_file() else [folder / "config.json"]
    indexes = list(folder.glob("*.safetensors.index.json"))
    for index in indexes:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            missing.append(index)
            continue
        missing += [folder / shard for shard in sorted(shards) if not (folder / shard).is_file()]
    if not indexes and not any(folder.glob("*.safetensors")):
        missing.append(folder / "*.safetensors")
    return missing
