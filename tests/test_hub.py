# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The model card, `push_pipeline_to_hub` and the download diagnostics, with the Hub calls replaced (no network)."""

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline, hub
from diffusers_dit4sr.hub import (
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
    SD35_LICENSE_URL,
    HubLoadError,
    describe_hub_error,
    explain_hub_errors,
    hub_offline_mode,
    hub_unreachable_reason,
    make_model_card,
    push_pipeline_to_hub,
)
from diffusers_dit4sr.pipelines.remote_code import LOADER_SOURCE
from diffusers_dit4sr.tiny import make_tiny_pipeline

from .utils import dns_failure, hub_http_error, wrapped

REPO_ID = "someone/dit4sr-q-diffusers"
PAPER_URL = "https://huggingface.co/papers/2503.23580"
COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


@pytest.fixture(scope="module")
def pipe() -> StableDiffusion3SRPipeline:
    return make_tiny_pipeline(seed=0)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Replaces `create_repo` and `_upload_folder`; records their arguments and copies the uploaded folder."""
    calls = SimpleNamespace(create_repo=None, upload=None, uploaded=tmp_path / "uploaded")

    def create_repo(repo_id, **kwargs):
        calls.create_repo = {"repo_id": repo_id, **kwargs}
        # The Hub resolves a bare name into the caller's namespace.
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"someone/{repo_id}")

    def upload_folder(self, working_dir, repo_id, **kwargs):
        # The temporary folder disappears when push_pipeline_to_hub returns: keep a copy.
        shutil.copytree(working_dir, calls.uploaded)
        calls.upload = {"pipeline": self, "repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}/commit/0123abcd"

    monkeypatch.setattr(hub, "create_repo", create_repo)
    monkeypatch.setattr(StableDiffusion3SRPipeline, "_upload_folder", upload_folder)
    return calls


class TestModelCard:
    def test_metadata(self):
        card = make_model_card(REPO_ID, dit4sr_variant="q")
        data = card.data
        assert data.library_name == "diffusers"
        assert data.pipeline_tag == "image-to-image"
        assert data.base_model == RELEASED_SD3_MODEL
        assert data.license == "other"
        assert data.license_name == "stabilityai-ai-community"
        assert data.license_link == SD35_LICENSE_URL
        assert {"diffusers", "super-resolution", "dit4sr", "stable-diffusion-3.5", "dit4sr-q"} <= set(data.tags)
        # The card is valid YAML + markdown: it parses back to the same metadata.
        assert ModelCard(str(card)).data.to_dict() == data.to_dict()

    def test_body(self):
        text = make_model_card(REPO_ID, dit4sr_variant="q").text
        assert "pip install diffusers-dit4sr" in text
        assert "from diffusers_dit4sr import StableDiffusion3SRPipeline" in text
        assert f'StableDiffusion3SRPipeline.from_pretrained("{REPO_ID}", dtype=torch.bfloat16)' in text
        assert "from diffusers import DiffusionPipeline" in text
        # The library's class, which runs no code from the repository, comes first; the generic loader, which does
        # (trust_remote_code), pins the revision the reader checked and says why.
        assert text.index("StableDiffusion3SRPipeline.from_pretrained(") < text.index(
            "DiffusionPipeline.from_pretrained("
        )
        generic = f'DiffusionPipeline.from_pretrained("{REPO_ID}", revision=COMMIT, trust_remote_code=True, dtype='
        assert generic in text and 'COMMIT = "..."  # the full hash of a commit whose pipeline_dit4sr.py you' in text
        assert "import and run this repository's `pipeline_dit4sr.py` as it is in the" in text
        assert "pin the commit you read with `revision=`" in text
        assert "`pipeline_dit4sr.py`" in text
        assert "pipe(image=" in text and "prompt=" in text
        assert f"dit4sr-upscale photo.png --model {REPO_ID}" in text
        assert PAPER_URL in text and "ICCV 2025" in text
        assert "@inproceedings{duan2025dit4sr" in text
        assert "Stability AI Community License" in text and SD35_LICENSE_URL in text
        assert "see the original repository" in text
        assert f"`dit4sr_q` transformer of [{RELEASED_DIT4SR_MODEL}]" in text

    def test_options(self):
        card = make_model_card("me/my-sr", base_model="me/my-base", description="My fine-tuned DiT4SR.")
        assert card.data.base_model == "me/my-base"
        assert not any(tag.startswith("dit4sr-") for tag in card.data.tags)
        assert "My fine-tuned DiT4SR." in card.text
        assert "released `dit4sr_" not in card.text
        with pytest.raises(ValueError, match="dit4sr_variant"):
            make_model_card(REPO_ID, dit4sr_variant="x")


class TestPushPipelineToHub:
    def test_uploads_a_complete_pipeline_with_our_card(self, pipe, fake_hub):
        card = make_model_card(REPO_ID, dit4sr_variant="q")
        result = push_pipeline_to_hub(
            pipe, REPO_ID, commit_message="Add DiT4SR", private=True, token="hf_test", create_pr=True, model_card=card
        )

        assert result == f"https://huggingface.co/{REPO_ID}/commit/0123abcd"
        assert fake_hub.create_repo == {"repo_id": REPO_ID, "private": True, "token": "hf_test", "exist_ok": True}
        upload = fake_hub.upload
        assert upload["pipeline"] is pipe and upload["repo_id"] == REPO_ID
        assert (upload["token"], upload["commit_message"], upload["create_pr"]) == ("hf_test", "Add DiT4SR", True)

        folder: Path = fake_hub.uploaded
        model_index = json.loads((folder / "model_index.json").read_text())
        assert model_index["_class_name"] == ["pipeline_dit4sr", "StableDiffusion3SRPipeline"]
        assert model_index["transformer"] == ["diffusers_dit4sr.models.transformer_dit4sr", "DiT4SRTransformer2DModel"]
        assert (folder / "pipeline_dit4sr.py").read_text(encoding="utf-8") == LOADER_SOURCE
        assert sorted(path.name for path in folder.iterdir() if path.is_file()) == [
            "README.md",
            "model_index.json",
            "pipeline_dit4sr.py",
        ]
        for component in (*COMPONENTS, "scheduler", "tokenizer", "tokenizer_2", "tokenizer_3"):
            assert (folder / component).is_dir(), component
        for component in COMPONENTS:
            assert list((folder / component).glob("*.safetensors")), component
        assert not list(folder.rglob("*.bin"))
        assert (folder / "README.md").read_text(encoding="utf-8") == str(card)

        transformer_weights = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
        expected = pipe.transformer.state_dict()
        assert transformer_weights.keys() == expected.keys()
        assert all(torch.equal(transformer_weights[name], expected[name]) for name in expected)

    def test_default_card_names_the_created_repository(self, pipe, fake_hub):
        push_pipeline_to_hub(pipe, "dit4sr-mine")
        assert fake_hub.upload["repo_id"] == "someone/dit4sr-mine"
        assert fake_hub.upload["commit_message"] is None and fake_hub.upload["create_pr"] is False
        readme = (fake_hub.uploaded / "README.md").read_text(encoding="utf-8")
        assert 'from_pretrained("someone/dit4sr-mine"' in readme
        assert "--model someone/dit4sr-mine" in readme

    def test_variant_names_the_weight_files(self, pipe, fake_hub):
        push_pipeline_to_hub(pipe, REPO_ID, variant="fp32")
        assert (fake_hub.uploaded / "transformer" / "diffusion_pytorch_model.fp32.safetensors").is_file()

    def test_pipeline_push_to_hub_uses_our_card(self, pipe, fake_hub):
        url = pipe.push_to_hub("you/dit4sr-pushed", commit_message="upload", token="secret")
        assert url == "https://huggingface.co/you/dit4sr-pushed/commit/0123abcd"
        assert fake_hub.create_repo["token"] == "secret"
        assert fake_hub.upload["commit_message"] == "upload" and fake_hub.upload["token"] == "secret"
        readme = (fake_hub.uploaded / "README.md").read_text(encoding="utf-8")
        assert readme == str(make_model_card("you/dit4sr-pushed"))
        index = json.loads((fake_hub.uploaded / "model_index.json").read_text())
        assert index["transformer"] == ["diffusers_dit4sr.models.transformer_dit4sr", "DiT4SRTransformer2DModel"]


# --- Why a download failed, and whether the Hub can be reached ----------------------------------------------------

HOST = urlparse(constants.ENDPOINT).hostname


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.mark.parametrize(
    "make_error, expected",
    [
        (
            lambda: wrapped(hub_http_error(GatedRepoError, 403)),
            ["me/x is a gated repository", "hf auth login", "license"],
        ),
        (
            lambda: wrapped(hub_http_error(RepositoryNotFoundError, 404)),
            ["the Hub has no repository me/x", "check the id"],
        ),
        (lambda: wrapped(hub_http_error(RevisionNotFoundError, 404)), ["no such revision"]),
        (
            lambda: wrapped(
                hub_http_error(RemoteEntryNotFoundError, 404, "https://hf.co/me/x/resolve/main/model_index.json")
            ),
            ["missing on the Hub (https://hf.co/me/x/resolve/main/model_index.json)", "model_index.json"],
        ),
        (
            lambda: wrapped(LocalEntryNotFoundError("not cached"), OfflineModeIsEnabled("offline mode is enabled")),
            ["HF_HUB_OFFLINE=1 is set", "me/x is not (fully) in the local Hugging Face cache", "unset HF_HUB_OFFLINE"],
        ),
        (
            lambda: wrapped(LocalEntryNotFoundError("not cached"), dns_failure()),
            [f"DNS lookup of {HOST} failed: Name or service not known", "me/x is not (fully) in the local", "network"],
        ),
        (lambda: wrapped(LocalEntryNotFoundError("not cached")), ["not (fully) in the local", "local files only"]),
        (lambda: ConnectionRefusedError(111, "Connection refused"), [f"{HOST} refused the connection"]),
        (lambda: wrapped(TimeoutError("timed out")), [f"no answer from {HOST} in time"]),
        (lambda: hub_http_error(HfHubHTTPError, 401), ["refused this machine's token (HTTP 401)", "hf auth login"]),
        (lambda: wrapped(hub_http_error(HfHubHTTPError, 503)), ["HTTP 503 (busy or down)", "try again later"]),
        (lambda: HFValidationError("Repo id must be in the form"), ["me/x is neither an existing folder nor a valid"]),
    ],
)
def test_describe_hub_error_names_the_cause_in_one_line(make_error, expected, online):
    message = describe_hub_error(make_error(), "me/x")
    assert message is not None and "\n" not in message
    for part in expected:
        assert part in message
    assert "config.json" not in message  # the wrapper's misleading message is not repeated


def test_describe_hub_error_knows_offline_mode_without_the_offline_exception(monkeypatch):
    # transformers checks offline mode itself and raises a plain LocalEntryNotFoundError.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub_offline_mode()
    assert "HF_HUB_OFFLINE=1 is set" in describe_hub_error(wrapped(LocalEntryNotFoundError("not cached")), "me/x")


def test_describe_hub_error_leaves_other_errors_alone(online):
    assert describe_hub_error(ValueError("Unrecognized model in me/x"), "me/x") is None
    assert describe_hub_error(wrapped(KeyError("transformer")), "me/x") is None


class FakeSession:
    def __init__(self, behaviour):
        self.behaviour, self.calls = behaviour, []

    def head(self, url, **kwargs):
        self.calls.append((url, kwargs))
        return self.behaviour()


def test_hub_unreachable_reason_asks_the_hub_once(monkeypatch, online):
    session = FakeSession(lambda: SimpleNamespace(status_code=404))  # any answer counts
    monkeypatch.setattr(hub, "get_session", lambda: session)
    assert hub_unreachable_reason(timeout=3) is None
    assert session.calls == [(constants.ENDPOINT, {"timeout": 3, "follow_redirects": False})]


def test_hub_unreachable_reason_says_why(monkeypatch, online):
    def fail():
        raise dns_failure()

    monkeypatch.setattr(hub, "get_session", lambda: FakeSession(fail))
    assert hub_unreachable_reason() == f"DNS lookup of {HOST} failed: Name or service not known"

    monkeypatch.setattr(hub, "get_session", lambda: FakeSession(lambda: time.sleep(5)))
    started = time.monotonic()
    assert hub_unreachable_reason(timeout=0.1) == f"no answer from {constants.ENDPOINT} within 0.1 s"
    assert time.monotonic() - started < 4


def test_hub_unreachable_reason_does_not_ask_in_offline_mode(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "get_session", lambda: pytest.fail("asked the Hub in offline mode"))
    assert hub_unreachable_reason() is None


# --- from_released: the cause of a failed download in the exception Python callers get ----------------------------


def fail_with(error: BaseException):
    def load(*args, **kwargs):
        raise error

    return load


@pytest.mark.parametrize(
    "make_error, expected",
    [
        (
            lambda: wrapped(LocalEntryNotFoundError("not cached"), OfflineModeIsEnabled("offline mode is enabled")),
            ["HF_HUB_OFFLINE=1 is set", f"{RELEASED_DIT4SR_MODEL} is not (fully) in the local Hugging Face cache"],
        ),
        (
            lambda: wrapped(LocalEntryNotFoundError("not cached"), dns_failure()),
            [f"DNS lookup of {HOST} failed", f"{RELEASED_DIT4SR_MODEL} is not (fully) in the local"],
        ),
        (
            lambda: wrapped(hub_http_error(RepositoryNotFoundError, 404)),
            [f"the Hub has no repository {RELEASED_DIT4SR_MODEL}"],
        ),
        (
            lambda: wrapped(
                hub_http_error(RemoteEntryNotFoundError, 404, "https://hf.co/x/resolve/main/dit4sr_q/config.json")
            ),
            ["a file that", "is missing on the Hub (https://hf.co/x/resolve/main/dit4sr_q/config.json)"],
        ),
    ],
)
def test_from_released_names_the_cause_of_a_failed_transformer_download(monkeypatch, online, make_error, expected):
    error = make_error()
    monkeypatch.setattr(DiT4SRTransformer2DModel, "from_pretrained", fail_with(error))
    with pytest.raises(HubLoadError) as raised:
        StableDiffusion3SRPipeline.from_released()
    message = str(raised.value)
    assert message.startswith(f"cannot load the DiT4SR transformer dit4sr_q/transformer of {RELEASED_DIT4SR_MODEL}: ")
    for part in expected:
        assert part in message
    assert "config.json." not in message and "\n" not in message  # not the wrapper's misleading sentence
    assert isinstance(raised.value, OSError) and raised.value.__cause__ is error


def test_from_released_names_the_gated_sd3_repository(monkeypatch, online):
    monkeypatch.setattr(DiT4SRTransformer2DModel, "from_pretrained", lambda *args, **kwargs: "transformer")
    gated = hub_http_error(GatedRepoError, 403)
    gated.repo_id = RELEASED_SD3_MODEL
    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_pretrained", fail_with(wrapped(gated)))
    with pytest.raises(HubLoadError, match=f"{RELEASED_SD3_MODEL} is a gated repository") as raised:
        StableDiffusion3SRPipeline.from_released()
    assert str(raised.value).startswith(f"cannot load the VAE, text encoders and scheduler of {RELEASED_SD3_MODEL}")
    assert raised.value.what.endswith(RELEASED_SD3_MODEL) and "hf auth login" in raised.value.cause


def test_from_released_without_the_files_in_the_cache(tmp_path, online):
    # Really asks huggingface_hub, offline: nothing is cached in an empty cache folder and downloads are off.
    with pytest.raises(HubLoadError) as raised:
        StableDiffusion3SRPipeline.from_released(
            dit4sr_model="me/not-cached", cache_dir=str(tmp_path), local_files_only=True
        )
    assert "me/not-cached is not (fully) in the local Hugging Face cache" in str(raised.value)


def test_explain_hub_errors_leaves_other_errors_alone(online):
    with pytest.raises(KeyError, match="transformer"):
        with explain_hub_errors("the pipeline", "me/x"):
            raise KeyError("transformer")
    with pytest.raises(OSError, match="not a saved pipeline") as raised:
        with explain_hub_errors("the pipeline", "me/x"):
            raise OSError("not a saved pipeline")
    assert not isinstance(raised.value, HubLoadError)
