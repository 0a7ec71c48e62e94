# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Sharing DiT4SR pipelines on the Hugging Face Hub: a model card that says how to use them, and `push_to_hub`.

Diffusers' own `push_to_hub` writes a generic card that points users to `DiffusionPipeline.from_pretrained`, which
cannot load a pipeline class from outside diffusers. Ours tells them to install this library and to load the
repository with `StableDiffusion3SRPipeline`.
"""

from __future__ import annotations

import os
import tempfile

from diffusers import DiffusionPipeline
from huggingface_hub import ModelCard, ModelCardData, create_repo

__all__ = [
    "RELEASED_DIT4SR_MODEL",
    "RELEASED_SD3_MODEL",
    "RELEASED_VARIANTS",
    "make_model_card",
    "make_training_model_card",
    "push_pipeline_to_hub",
]

RELEASED_SD3_MODEL = "stabilityai/stable-diffusion-3.5-medium"
"""The base model whose VAE, text encoders and scheduler the released DiT4SR weights were trained with (gated)."""
RELEASED_DIT4SR_MODEL = "acceptee/DiT4SR"
"""The repository of the released DiT4SR transformers, one per variant in `dit4sr_{variant}/transformer`."""
RELEASED_VARIANTS = ("q", "f")

PAPER_URL = "https://huggingface.co/papers/2503.23580"
ORIGINAL_CODE_URL = "https://github.com/adam-duan/DiT4SR"
SD35_LICENSE_NAME = "stabilityai-ai-community"
SD35_LICENSE_URL = "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/blob/main/LICENSE.md"
MODEL_CARD_TAGS = ["diffusers", "super-resolution", "image-super-resolution", "dit4sr", "stable-diffusion-3.5"]

_VARIANT_DESCRIPTIONS = {
    "q": "the quality-oriented model",
    "f": "the fidelity-oriented model, which stays closer to the input image",
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
    load the repository with this library and with the `dit4sr-upscale` command.

    Args:
        repo_id (`str`): The repository (or folder) the card describes; the usage examples load it.
        base_model (`str`, defaults to `RELEASED_SD3_MODEL`): The Hub id of the model it derives from.
        dit4sr_variant (`str`, *optional*): `"q"` or `"f"` when the pipeline holds a released DiT4SR transformer.
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
    Uploads a pipeline to the Hub as one commit: every component, `model_index.json` and our model card as
    `README.md` (in place of diffusers' generic card, which would point users to a loader that cannot find our class).

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
