# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Sharing DiT4SR pipelines on the Hugging Face Hub: a model card that says how to use them (`make_model_card`; for
trained weights, `make_training_model_card`), and `push_to_hub`.

Diffusers' own `push_to_hub` writes a generic card that says nothing of this library. Ours tells users to install it
and leads with the library's own `StableDiffusion3SRPipeline.from_pretrained`, which runs no code from the
repository; Diffusers' generic `DiffusionPipeline.from_pretrained(..., revision=..., trust_remote_code=True)`, which
the saved loader module `pipeline_dit4sr.py` serves (`diffusers_dit4sr.pipelines.remote_code`), comes second, with
what the flag allows and a pinned revision.

Downloading, for programs that load models (the `dit4sr-upscale` command): `hub_unreachable_reason` asks the Hub
once, with a short timeout, whether it can be reached at all, and `describe_hub_error` turns what a failed
`from_pretrained` raised (diffusers and transformers wrap the Hub's exceptions in `OSError`s whose messages can
mislead, like "does not appear to have a file named config.json" when offline) into one sentence naming the cause.
`explain_hub_errors` re-raises such a failure as a `HubLoadError` carrying that sentence, for Python callers.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from diffusers import DiffusionPipeline
from huggingface_hub import ModelCard, ModelCardData, constants, create_repo, get_session
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .constants import RELEASED_DIT4SR_MODEL, RELEASED_SD3_MODEL, RELEASED_VARIANTS
from .errors import gated_access_fix, one_line

__all__ = [
    "HubLoadError",
    "RELEASED_DIT4SR_MODEL",
    "RELEASED_SD3_MODEL",
    "RELEASED_VARIANTS",
    "describe_hub_error",
    "explain_hub_errors",
    "hub_offline_mode",
    "hub_unreachable_reason",
    "make_model_card",
    "make_training_model_card",
    "push_pipeline_to_hub",
]


PAPER_URL = "https://huggingface.co/papers/2503.23580"
ORIGINAL_CODE_URL = "https://github.com/adam-duan/DiT4SR"
SD35_LICENSE_NAME = "stabilityai-ai-community"
SD35_LICENSE_URL = "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/blob/main/LICENSE.md"
MODEL_CARD_TAGS = ["diffusers", "super-resolution", "image-super-resolution", "dit4sr", "stable-diffusion-3.5"]

_VARIANT_DESCRIPTIONS = {
    "q": "the quality-oriented model",
    "f": "the fidelity-oriented model, which stays closer to the input image",
    "r1": "the authors' revised model, whose LR tokens attend with their own keys as in the paper's Eq. 1",
}
_CITATION = """\
@inproceedings{duan2025dit4sr,
  title={DiT4SR: Taming Diffusion Transformer for Real-World Image Super-Resolution},
  author={Duan, Zheng-Peng and Zhang, Jiawei and Jin, Xin and Zhang, Ziheng and Xiong, Zheng and Zou, Dongqing and Ren, Jimmy and Guo, Chun-Le and Li, Chongyi},
  booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision},
  year={2025}
}"""
_LICENSE_AND_CITATION = f"""
## License

The VAE, text encoders and transformer backbone come from Stable Diffusion 3.5 and are licensed under the
[Stability AI Community License]({SD35_LICENSE_URL}). The DiT4SR weights are released by their authors under their own
terms (the Pi-Lab License 1.0 at the time of writing); see the original repository,
[{ORIGINAL_CODE_URL}]({ORIGINAL_CODE_URL}), and [{RELEASED_DIT4SR_MODEL}](https://huggingface.co/{RELEASED_DIT4SR_MODEL}).
Read both before using the model.

## Citation

```bibtex
{_CITATION}
```
"""


def make_model_card(
    repo_id: str,
    base_model: str = RELEASED_SD3_MODEL,
    dit4sr_variant: str | None = None,
    description: str | None = None,
) -> ModelCard:
    r"""
    The model card (`README.md`) of a `StableDiffusion3SRPipeline` repository.

    Its metadata makes the Hub list the repository as a Diffusers image-to-image model derived from `base_model`, under
    the Stability AI Community License that the SD3.5 components carry; its text says what DiT4SR is and shows how to
    load the repository: first with this library's class (no remote code), then with Diffusers' `DiffusionPipeline`
    (`trust_remote_code=True`, which imports our class through the repository's `pipeline_dit4sr.py`: the snippet
    pins `revision=` to a commit the reader has checked, and says why) and with the `dit4sr-upscale` command.

    Args:
        repo_id (`str`): The repository (or folder) the card describes; the usage examples load it.
        base_model (`str`, defaults to `RELEASED_SD3_MODEL`): The Hub id of the model it derives from.
        dit4sr_variant (`str`, *optional*): One of `RELEASED_VARIANTS` (`"q"`, `"f"`, `"r1"`) when the pipeline
            holds a released DiT4SR transformer.
        description (`str`, *optional*): The opening paragraph; defaults to one describing a DiT4SR pipeline.
    """
    if dit4sr_variant is not None and dit4sr_variant not in RELEASED_VARIANTS:
        raise ValueError(f"`dit4sr_variant` must be one of {RELEASED_VARIANTS} or None, got {dit4sr_variant!r}.")

    tags = [f"dit4sr-{dit4sr_variant}"] if dit4sr_variant is not None else []
    metadata = _card_metadata(base_model, tags)

    if description is None:
        description = (
            f"A [DiT4SR]({PAPER_URL}) pipeline for real-world image super-resolution, for the "
            "[diffusers-dit4sr](https://pypi.org/project/diffusers-dit4sr/) library."
        )
    if dit4sr_variant is not None:
        description += (
            f"\n\nIt combines the released `dit4sr_{dit4sr_variant}` transformer of "
            f"[{RELEASED_DIT4SR_MODEL}](https://huggingface.co/{RELEASED_DIT4SR_MODEL}) "
            f"({_VARIANT_DESCRIPTIONS[dit4sr_variant]}) with the VAE, text encoders and scheduler of "
            f"[{base_model}](https://huggingface.co/{base_model}) in one Diffusers folder."
        )

    body = f"""
# DiT4SR: {repo_id}

{description}

DiT4SR ([Taming Diffusion Transformer for Real-World Image Super-Resolution]({PAPER_URL}), ICCV 2025) adds a second
image stream for the low-resolution input to the diffusion transformer of Stable Diffusion 3.5: the LR tokens attend
jointly with the image and text tokens and are injected into the image stream through a depthwise convolution. The
degraded image is upscaled, VAE-encoded and used as that stream's input, and the output is generated from noise,
guided by a caption.

## Usage

```bash
pip install diffusers-dit4sr
```

```python
import torch
from PIL import Image
from diffusers_dit4sr import StableDiffusion3SRPipeline

pipe = StableDiffusion3SRPipeline.from_pretrained("{repo_id}", dtype=torch.bfloat16).to("cuda")
image = pipe(image=Image.open("photo.png"), prompt="a red brick house by a lake", upscale=4).images[0]
image.save("photo_x4.png")
```

Diffusers' generic loader gives the same pipeline when diffusers-dit4sr is installed, but only with
`trust_remote_code=True`, which lets Diffusers import and run this repository's `pipeline_dit4sr.py` as it is in the
revision you load. The file's only code imports `StableDiffusion3SRPipeline` from the installed library; read it, and
pin the commit you read with `revision=`, so that a later change to the file cannot run on your machine. The first
way needs no such permission.

```python
import diffusers_dit4sr.pipelines  # noqa: F401 (registers the library's components with Diffusers)
from diffusers import DiffusionPipeline

COMMIT = "..."  # the full hash of a commit whose pipeline_dit4sr.py you have read (the repository's history)
pipe = DiffusionPipeline.from_pretrained("{repo_id}", revision=COMMIT, trust_remote_code=True, dtype=torch.bfloat16)
```

Diffusers checks a repository's components before it reads that file, hence the import first.

From the command line:

```bash
dit4sr-upscale photo.png --model {repo_id}
```

A caption of the image helps; large images are processed in overlapping tiles.
{_LICENSE_AND_CITATION}"""
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")


def make_training_model_card(repo_id: str, base_model: str, lora: bool, training_summary: str) -> ModelCard:
    r"""
    The model card of weights written by `examples/train_dit4sr.py`: a DiT4SR transformer (`transformer/`) or LoRA
    weights (`pytorch_lora_weights.safetensors`), with the code that puts them into a pipeline.

    Args:
        repo_id (`str`): The repository the card describes.
        base_model (`str`): The pipeline whose VAE and text encoders the weights were trained with.
        lora (`bool`): Whether the repository holds LoRA weights rather than a transformer.
        training_summary (`str`): How the weights were trained (a Markdown paragraph or list).
    """
    metadata = _card_metadata(base_model, ["lora"] if lora else [])
    if lora:
        load = f'pipe = StableDiffusion3SRPipeline.from_released(dtype=torch.bfloat16)\npipe.load_lora_weights("{repo_id}")'
        what = "LoRA weights for the DiT4SR transformer"
    else:
        load = (
            f'transformer = DiT4SRTransformer2DModel.from_pretrained("{repo_id}", subfolder="transformer", '
            "dtype=torch.bfloat16)\n"
            f'pipe = StableDiffusion3SRPipeline.from_pretrained("{base_model}", transformer=transformer, '
            "dtype=torch.bfloat16)"
        )
        what = "A DiT4SR transformer"
    body = f"""
# DiT4SR: {repo_id}

{what} for real-world image super-resolution ([DiT4SR]({PAPER_URL}), ICCV 2025), trained with
[diffusers-dit4sr](https://pypi.org/project/diffusers-dit4sr/)'s `examples/train_dit4sr.py`.

## Training

{training_summary}

## Usage

```python
import torch
from PIL import Image
from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline

{load}
pipe.to("cuda")
image = pipe(image=Image.open("photo.png"), prompt="a red brick house by a lake").images[0]
```
{_LICENSE_AND_CITATION}"""
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")


def _card_metadata(base_model: str, extra_tags: list[str]) -> ModelCardData:
    """Lists the repository as a Diffusers image-to-image model derived from `base_model`, under SD3.5's license."""
    return ModelCardData(
        library_name="diffusers",
        pipeline_tag="image-to-image",
        tags=[*MODEL_CARD_TAGS, *extra_tags],
        base_model=base_model,
        license="other",
        license_name=SD35_LICENSE_NAME,
        license_link=SD35_LICENSE_URL,
    )


def push_pipeline_to_hub(
    pipeline: DiffusionPipeline,
    repo_id: str,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: str | None = None,
    model_card: ModelCard | None = None,
) -> str:
    r"""
    Uploads a pipeline to the Hub as one commit: what `save_pretrained` writes (every component, `model_index.json`
    and, for a `StableDiffusion3SRPipeline`, the loader module `pipeline_dit4sr.py`) and our model card as `README.md`
    (in place of diffusers' generic card, which says nothing of this library).

    Args:
        pipeline ([`~diffusers.DiffusionPipeline`]): The pipeline, usually a `StableDiffusion3SRPipeline`.
        repo_id (`str`): The repository; created if it does not exist.
        commit_message (`str`, *optional*): Defaults to `"Upload {pipeline class}"`.
        private (`bool`, *optional*): Visibility of a newly created repository (the namespace's default if `None`).
        token (`str`, *optional*): The Hub token; defaults to the stored login.
        create_pr (`bool`, defaults to `False`): Open a pull request instead of committing to `main`.
        safe_serialization (`bool`, defaults to `True`): Save weights as safetensors.
        variant (`str`, *optional*): Save weights as `*.{variant}.safetensors`.
        model_card (`ModelCard`, *optional*): Defaults to [`make_model_card`] for the created repository.

    Returns:
        The commit information returned by `huggingface_hub.upload_folder` (a `str` holding the commit URL).
    """
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    if model_card is None:
        model_card = make_model_card(repo_id)

    with tempfile.TemporaryDirectory() as tmp_dir:
        pipeline.save_pretrained(tmp_dir, safe_serialization=safe_serialization, variant=variant)
        model_card.save(os.path.join(tmp_dir, "README.md"))
        return pipeline._upload_folder(
            tmp_dir, repo_id, token=token, commit_message=commit_message, create_pr=create_pr
        )


# --- Downloading: is the Hub reachable, and why did a download fail ------------------------------------------------

HUB_CHECK_TIMEOUT = 5.0
"""Seconds `hub_unreachable_reason` waits for the Hub's answer by default."""


def hub_offline_mode() -> bool:
    """Whether `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`) was set when huggingface_hub was imported."""
    is_offline_mode = getattr(constants, "is_offline_mode", None)
    return bool(is_offline_mode() if is_offline_mode is not None else constants.HF_HUB_OFFLINE)


def hub_unreachable_reason(timeout: float = HUB_CHECK_TIMEOUT) -> str | None:
    """
    Asks the Hub (`HF_ENDPOINT`, by default https://huggingface.co) once whether it answers, through
    huggingface_hub's own HTTP session (its proxy settings included), without retries. Downloads would otherwise
    retry for a minute before failing. In offline mode (`hub_offline_mode()`) it does not ask.

    Args:
        timeout: Seconds to wait at most, the name lookup included.

    Returns:
        `None` when the Hub answers, whatever the HTTP status (or in offline mode), and otherwise why not in a few
        words ("DNS lookup of huggingface.co failed: Name or service not known", "no answer from
        https://huggingface.co within 5 s", ...).
    """
    if hub_offline_mode():
        return None
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
        except Exception as error:  # noqa: BLE001 (every failure is a reason to report)
            outcome.append(error)
        else:
            outcome.append(None)

    # A daemon thread bounds the name lookup too, which no HTTP timeout covers; left behind, it ends by itself.
    thread = threading.Thread(target=ask, name="hub-reachable", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"no answer from {constants.ENDPOINT} within {timeout:g} s"
    if outcome[0] is None:
        return None
    return _network_reason(outcome[0]) or f"{type(outcome[0]).__name__}: {one_line(outcome[0])}"


def describe_hub_error(error: BaseException, what: str) -> str | None:
    """
    What made a load fail, as one sentence with the fix, when the cause is the Hub: offline mode, no network, a gated
    repository without access, no such repository, a missing file, a refused token or a Hub outage.

    diffusers and transformers wrap the Hub's exceptions (`OSError("... does not appear to have a file named
    config.json")`), so the whole chain (`__cause__`, `__context__`) is searched.

    Args:
        error: What loading raised.
        what: The repository id (or a few) that was loaded, for the sentence.

    Returns:
        The sentence, or `None` when no Hub exception is among `error`'s causes.
    """
    chain = list(_exception_chain(error))

    def find(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((item for item in chain if isinstance(item, kind)), None)

    not_cached = f"{what} is not (fully) in the local Hugging Face cache"
    if find(OfflineModeIsEnabled) is not None or (find(LocalEntryNotFoundError) is not None and hub_offline_mode()):
        return (
            f"HF_HUB_OFFLINE=1 is set (no downloads) and {not_cached}. Fix: unset HF_HUB_OFFLINE to download it "
            "once, or load a local folder"
        )
    gated = find(GatedRepoError)
    if gated is not None:
        repo = getattr(gated, "repo_id", None) or what
        return (
            f"{repo} is a gated repository and this machine has no access to it. Fix: "
            f"{gated_access_fix(repo, constants.ENDPOINT)}"
        )
    missing_repo = find(RepositoryNotFoundError)
    if missing_repo is not None:
        repo = getattr(missing_repo, "repo_id", None) or what
        return (
            f"the Hub has no repository {repo} (or it is private and this machine is not logged in with access to "
            "it). Fix: check the id (a local folder must exist), or `hf auth login`"
        )
    missing_revision = find(RevisionNotFoundError)
    if missing_revision is not None:
        return f"the Hub repository of {what} has no such revision (branch, tag or commit)"
    network = find(_network_error_types())
    if network is not None:
        return (
            f"cannot reach the Hub: {_network_reason(network)}, and {not_cached}. Fix: check the network (or the "
            "proxy), or load a local folder"
        )
    missing_file = find(EntryNotFoundError)
    if missing_file is not None and not isinstance(missing_file, LocalEntryNotFoundError):
        url = _request_url(missing_file)
        return (
            f"a file that {what} needs is missing on the Hub{f' ({url})' if url else ''}: the repository is not "
            "what was expected (a pipeline needs model_index.json and one folder per component)"
        )
    if missing_file is not None:
        return f"{not_cached}, and downloads were off (local files only)"
    http = find(HfHubHTTPError)
    if http is not None:
        status = getattr(getattr(http, "response", None), "status_code", None)
        if status == 401:
            return "the Hub refused this machine's token (HTTP 401). Fix: `hf auth login` again, or set HF_TOKEN"
        if isinstance(status, int) and (status == 429 or status >= 500):
            return f"the Hub answered HTTP {status} (busy or down) while loading {what}. Fix: try again later"
        return f"the Hub answered HTTP {status} while loading {what}: {one_line(http)}"
    invalid = find(HFValidationError)
    if invalid is not None:
        return f"{what} is neither an existing folder nor a valid Hub id (namespace/name): {one_line(invalid)}"
    return None


class HubLoadError(OSError):
    """Loading `what` failed because of the Hub; `cause` is `describe_hub_error`'s sentence (its reason and fix).

    An `OSError`, like the errors of `from_pretrained` it replaces (which stay its `__cause__`)."""

    def __init__(self, what: str, cause: str) -> None:
        super().__init__(f"cannot load {what}: {cause}.")
        self.what, self.cause = what, cause


@contextmanager
def explain_hub_errors(what: str, repos: str) -> Iterator[None]:
    """
    Re-raises an exception of loading whose cause is the Hub as a [`HubLoadError`] naming that cause (offline mode,
    no network, a gated or unknown repository, a missing file...), instead of the misleading message diffusers and
    transformers wrap it in. Other exceptions pass unchanged.

    Args:
        what: What is loaded, for the message ("the DiT4SR transformer").
        repos: The repositories or folders it is loaded from, for the message.

    Example:

        with explain_hub_errors("the DiT4SR transformer", "acceptee/DiT4SR"):
            transformer = DiT4SRTransformer2DModel.from_pretrained("acceptee/DiT4SR", subfolder=...)
    """
    try:
        yield
    except HubLoadError:
        raise
    except Exception as error:
        cause = describe_hub_error(error, repos)
        if cause is None:
            raise
        raise HubLoadError(what, cause) from error


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    pending: list[BaseException] = [error]
    while pending:
        item = pending.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        pending.extend(cause for cause in (item.__cause__, item.__context__) if cause is not None)


def _network_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions of a failed connection: Python's own, and those of the HTTP clients that are loaded (a library
    that was never imported raised nothing)."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "TransportError", None), type):
            kinds.append(module.TransportError)
    requests_exceptions = sys.modules.get("requests.exceptions")
    if requests_exceptions is not None:
        kinds += [requests_exceptions.ConnectionError, requests_exceptions.Timeout]
    return tuple(kinds)


def _network_reason(error: BaseException) -> str | None:
    """A few words on why a connection failed (DNS, refused, timed out, ...), or `None` if `error` is no such
    failure."""
    chain = list(_exception_chain(error))
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    dns = next((item for item in chain if isinstance(item, socket.gaierror)), None)
    if dns is not None:
        return f"DNS lookup of {host} failed: {dns.strerror or one_line(dns)}"
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        return f"{host} refused the connection"
    if any(isinstance(item, TimeoutError) or "Timeout" in type(item).__name__ for item in chain):
        return f"no answer from {host} in time"
    network = next((item for item in chain if isinstance(item, _network_error_types())), None)
    if network is None:
        return None
    return f"cannot connect to {host} ({one_line(network)})"


def _request_url(error: BaseException) -> str | None:
    request = getattr(getattr(error, "response", None), "request", None)
    url = getattr(request, "url", None)
    return str(url) if url else None
