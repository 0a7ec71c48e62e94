# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Prepares DiT4SR training pairs once, so that training reads them instead of synthesizing them every step.

Every sample is a random crop of an HR image (spec, section 6), its unsharp-masked target and its LR from the
Real-ESRGAN second-order degradation, a caption and, optionally, the VAE latents of both images and the text
embeddings of the caption. The output folder is read by `diffusers_dit4sr.training.datasets.PreparedDataset`; its
format is described in `docs/data.md`.

    python examples/prepare_dataset.py --input_dir data/HR --output_dir data/dit4sr_512 \
        --pretrained_model_name_or_path stabilityai/stable-diffusion-3.5-medium \
        --cache_latents --cache_text_embeddings --crops_per_image 4

Sample `i` depends only on the settings and on `i` (its crop, flip and degradation draws come from generators seeded
with `derive_seed(seed, i, stream)`), and each sample file is written atomically, so an interrupted run resumes where
it stopped when started again with the same arguments (other settings: one line and exit code 2). Unreadable
images are reported, skipped, and make the exit code 1.

The source images may also come from a 🤗 dataset (`--dataset_name`), and the prepared pairs can be written as a 🤗
dataset (`--export_dataset DIR`: parquet shards and a dataset card) and uploaded (`--push_to_hub`); training reads it
with `--dataset_name`:

    python examples/prepare_dataset.py --dataset_name you/hr-photos --caption_column text --output_dir data/pairs \
        --export_dataset data/pairs_hf --push_to_hub --hub_dataset_id you/dit4sr-pairs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

# Our pipeline module first: it imports diffusers' SD3 pipelines with transformers' warnings about torchvision silenced.
import diffusers_dit4sr.pipelines  # noqa: F401

# isort: split
import PIL.Image
import safetensors.torch
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from diffusers_dit4sr.captioning import Captioner
from diffusers_dit4sr.cli.messages import DATASET_OPTIONS, CommandLineTerms
from diffusers_dit4sr.errors import one_line
from diffusers_dit4sr.file_utils import atomic_write_path, remove_stale_temporary_files
from diffusers_dit4sr.image_processing import resize
from diffusers_dit4sr.photo import read_photo
from diffusers_dit4sr.training import DegradationConfig, RealESRGANDegradation
from diffusers_dit4sr.training.datasets import (
    PREPARED_FORMAT,
    PREPARED_VERSION,
    derive_seed,
    list_images,
    random_crop,
    read_caption,
)
from diffusers_dit4sr.training.hf_datasets import DatasetSource, load_training_rows, read_row_image
from diffusers_dit4sr.training.prepared_hub import export_prepared_dataset, push_prepared_dataset

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CROP_STREAM, DEGRADATION_STREAM, HR_LATENT_STREAM, LR_LATENT_STREAM = range(4)
"""Per-sample random streams: `torch.Generator().manual_seed(derive_seed(seed, index, stream))`."""
RESUME_KEYS = (
    "resolution",
    "scale",
    "seed",
    "crops_per_image",
    "degradation",
    "captions",
    "caption_model",
    "caption_prompt",
    "has_latents",
    "has_text_embeddings",
    "vae",
    "text_encoders",
    "max_sequence_length",
    "sources_sha256",
)
"""`dataset.json` fields that decide the samples' content: a run may only add samples to a folder that agrees on them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Prepare DiT4SR training pairs (LR/HR crops, latents, embeddings).")
    parser.add_argument("--input_dir", type=Path, default=None, help="Folder of HR images, searched recursively.")
    # 🤗 datasets: the HR images from a dataset, and the pairs written as one.
    hub = parser.add_argument_group("🤗 datasets")
    hub.add_argument(
        "--dataset_name",
        default=None,
        help="🤗 dataset of HR images instead of --input_dir: a Hub id, a local folder datasets.load_dataset reads, "
        "or parquet / .tar files (with --captions txt, captions come from --caption_column)",
    )
    hub.add_argument("--dataset_config_name", default=None, help="The dataset's configuration (subset).")
    hub.add_argument("--dataset_split", default="train", help='Split to read; "train[:N]": its first N rows.')
    hub.add_argument("--dataset_revision", default=None, help="Branch, tag or commit of a Hub dataset.")
    hub.add_argument("--image_column", default="image", help="Column of the HR images (default: image).")
    hub.add_argument("--caption_column", default=None, help="Column of the captions (default: empty captions).")
    hub.add_argument("--cache_dir", default=None, help="🤗 Datasets' cache of downloads (default: its own).")
    hub.add_argument(
        "--export_dataset",
        type=Path,
        default=None,
        help="Also write the prepared pairs as a 🤗 dataset in this folder: parquet shards (images as Image, latents "
        "and embeddings as arrays), the empty prompt's embeddings and a dataset card (default with --push_to_hub: "
        "OUTPUT_DIR/hf_dataset).",
    )
    hub.add_argument("--shard_size", type=int, default=256, help="Samples per parquet shard (default: %(default)s).")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the exported dataset to the Hub.")
    hub.add_argument("--hub_dataset_id", default=None, help="Dataset repository (default: the export folder's name).")
    hub.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in one).")
    hub.add_argument("--hub_private", action="store_true", help="Create the repository as private.")
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="Folder to write (or resume) the prepared dataset in."
    )
    parser.add_argument("--resolution", type=int, default=512, help="Side of the HR crops (default: %(default)s).")
    parser.add_argument("--crops_per_image", type=int, default=1, help="Random crops per image (default: 1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of all random draws (default: %(default)s).")
    parser.add_argument(
        "--degradation_config",
        default=None,
        help="YAML or JSON file of DegradationConfig fields (default: the released DiT4SR / SeeSR parameters).",
    )
    parser.add_argument(
        "--captions",
        choices=("txt", "none", "model"),
        default="txt",
        help="txt: text files next to the images; none: empty captions; model: run --caption_model on each HR crop.",
    )
    parser.add_argument("--caption_extension", default=".txt", help="Caption files are `<stem><extension>`.")
    parser.add_argument("--caption_model", default=None, help="transformers image-text-to-text model id or path.")
    parser.add_argument(
        "--caption_prompt",
        default="Describe this image in one detailed sentence.",
        help="Instruction given to the caption model with each image (e.g. '<MORE_DETAILED_CAPTION>' for Florence-2).",
    )
    parser.add_argument("--caption_max_new_tokens", type=int, default=77, help="Longest caption, in tokens.")
    parser.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="SD3.5 (or DiT4SR pipeline) folder or Hub id whose VAE / text encoders compute the cached tensors.",
    )
    parser.add_argument("--cache_latents", action="store_true", help="Store the HR and LR VAE latents.")
    parser.add_argument("--cache_text_embeddings", action="store_true", help="Store the captions' text embeddings.")
    parser.add_argument("--max_sequence_length", type=int, default=77, help="T5 tokens (released training: 77).")
    parser.add_argument("--batch_size", type=int, default=8, help="Samples per VAE / encoder batch (default: 8).")
    parser.add_argument(
        "--dataloader_num_workers", type=int, default=0, help="Processes that read, crop and degrade images."
    )
    parser.add_argument("--device", default="auto", help="Device of the models: auto, cpu, cuda, cuda:1, mps...")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="Precision of the models.")
    parser.add_argument("--max_samples", type=int, default=None, help="Stop after this many samples (for trials).")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)

    if (args.input_dir is None) == (args.dataset_name is None):
        parser.error("pass exactly one of --input_dir and --dataset_name")
    if args.push_to_hub and args.export_dataset is None:
        args.export_dataset = args.output_dir / "hf_dataset"
    for name in ("resolution", "crops_per_image", "batch_size", "max_sequence_length", "caption_max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.shard_size < 1:
        parser.error("--shard_size must be >= 1")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max_samples must be >= 1")
    if args.dataloader_num_workers < 0:
        parser.error("--dataloader_num_workers must be >= 0")
    if args.captions == "model" and not args.caption_model:
        parser.error("--captions model needs --caption_model")
    if args.captions == "model" and not args.caption_prompt.strip():
        parser.error("--caption_prompt must not be empty")
    if (args.cache_latents or args.cache_text_embeddings) and not args.pretrained_model_name_or_path:
        parser.error("--cache_latents and --cache_text_embeddings need --pretrained_model_name_or_path")
    try:
        args.degradation = (
            DegradationConfig.load(args.degradation_config) if args.degradation_config else DegradationConfig()
        )
    except (OSError, TypeError, ValueError, ImportError) as error:
        parser.error(f"--degradation_config: {error}")
    if args.resolution % args.degradation.scale:
        parser.error(f"--resolution must be divisible by the degradation scale ({args.degradation.scale})")
    return args


def sample_name(index: int) -> str:
    return f"{index:08d}.safetensors"


def seeded(seed: int, index: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, index, stream))


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round().clamp(0, 255).to(torch.uint8)


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file under a temporary name in the same folder, then rename it: never half-written."""
    with atomic_write_path(path) as temporary:
        temporary.write_bytes(safetensors.torch.save(tensors, metadata=metadata))


def atomic_write_json(data: dict[str, Any], path: Path) -> None:
    with atomic_write_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


class SourceImages:
    """The HR images: the files under --input_dir, or the rows of --dataset_name."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.rows = args, None
        if args.dataset_name is None:
            self.paths = list_images(args.input_dir)
            self.names = [path.relative_to(args.input_dir).as_posix() for path in self.paths]
            return
        source = DatasetSource(
            args.dataset_name,
            config=args.dataset_config_name,
            split=args.dataset_split,
            revision=args.dataset_revision,
            image_column=args.image_column,
            caption_column=args.caption_column,
        )
        self.rows = load_training_rows([source], cache_dir=args.cache_dir, token=args.hub_token).rows
        self.names = [f"row {index}" for index in range(len(self.rows))]

    def __len__(self) -> int:
        return len(self.names)

    def read(self, index: int):
        """`(pixels, caption)` of image `index` (the caption of --captions txt); a `ValueError` if unreadable."""
        if self.rows is None:
            path = self.paths[index]
            return read_photo(path).pixels, read_caption(path, self.args.caption_extension)
        row = self.rows[index]
        return read_row_image(row["image"], self.args.hub_token), row["caption"]


class PairSource(Dataset):
    """Sample `index`: crop `index % crops_per_image` of image `index // crops_per_image`, degraded.

    A sample whose file exists is read back instead (its batch is being recomputed for a missing neighbour). Items
    are dicts with `index`, `source`, `pending` (needs writing) and `hr`, `lr` (uint8), `caption` (None when a
    model must write it), or `error` when the image cannot be read.
    """

    def __init__(self, images: SourceImages, samples_dir: Path, total: int, args: argparse.Namespace) -> None:
        self.images, self.samples_dir, self.total, self.args = images, samples_dir, total, args
        self.degradation = RealESRGANDegradation(args.degradation)

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, index: int) -> dict[str, Any]:
        args = self.args
        source = self.images.names[index // args.crops_per_image]
        item: dict[str, Any] = {"index": index, "source": source}
        sample_path = self.samples_dir / sample_name(index)
        if sample_path.exists():
            with safe_open(sample_path, framework="pt") as file:
                caption = (file.metadata() or {}).get("caption", "")
                hr, lr = file.get_tensor("hr"), file.get_tensor("lr")
            return {**item, "pending": False, "hr": hr, "lr": lr, "caption": caption}
        try:
            pixels, caption = self.images.read(index // args.crops_per_image)
        except ValueError as error:
            return {**item, "error": str(error)}
        crop = random_crop(pixels, args.resolution, seeded(args.seed, index, CROP_STREAM))
        lr, hr = self.degradation(crop[None], generator=seeded(args.seed, index, DEGRADATION_STREAM))
        caption = caption if args.captions == "txt" else ""
        if args.captions == "model":
            caption = None
        return {**item, "pending": True, "hr": to_uint8(hr[0]), "lr": to_uint8(lr[0]), "caption": caption}


def keep_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


@torch.inference_mode()
def encode_latents(vae: AutoencoderKL, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """SD3 latents of images in [0, 1] (spec, section 1), one noise generator per image, as float32 on the CPU."""
    pixels = (images * 2 - 1).to(vae.device, vae.dtype)
    latents = vae.encode(pixels).latent_dist.sample(generator=generators)
    return ((latents - vae.config.shift_factor) * vae.config.scaling_factor).float().cpu().contiguous()


def load_text_pipeline(model: str, dtype: torch.dtype) -> StableDiffusion3Pipeline:
    """An SD3 pipeline of `model`'s text encoders, tokenizers and scheduler only (no transformer, no VAE).

    Loaded component by component, so that SD3.5 folders and DiT4SR pipeline folders work alike: the latter's
    `model_index.json` names our pipeline class through a loader module (`pipelines.remote_code`), which
    `StableDiffusion3Pipeline.from_pretrained` would refuse to run.
    """
    components = {
        name: loader.from_pretrained(model, subfolder=name, **({"dtype": dtype} if name.startswith("text") else {}))
        for name, loader in (
            ("scheduler", FlowMatchEulerDiscreteScheduler),
            ("text_encoder", CLIPTextModelWithProjection),
            ("text_encoder_2", CLIPTextModelWithProjection),
            ("text_encoder_3", T5EncoderModel),
            ("tokenizer", CLIPTokenizer),
            ("tokenizer_2", CLIPTokenizer),
            ("tokenizer_3", T5TokenizerFast),
        )
    }
    return StableDiffusion3Pipeline(transformer=None, vae=None, **components)


@torch.inference_mode()
def encode_text(
    pipeline: StableDiffusion3Pipeline, captions: list[str], max_sequence_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(prompt_embeds (B, T, D), pooled_prompt_embeds (B, P))` of the captions, float32 on the CPU."""
    prompt_embeds, _, pooled_prompt_embeds, _ = pipeline.encode_prompt(
        prompt=captions,
        prompt_2=None,
        prompt_3=None,
        device=pipeline.text_encoder.device,
        do_classifier_free_guidance=False,
        max_sequence_length=max_sequence_length,
    )
    return prompt_embeds.float().cpu().contiguous(), pooled_prompt_embeds.float().cpu().contiguous()


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def dataset_info(args: argparse.Namespace, images: SourceImages) -> dict[str, Any]:
    """`dataset.json` of this run (`num_samples`, `complete` and `failed_sources` are updated as it goes)."""
    sources = "\n".join(images.names)
    if args.dataset_name is not None:  # rows have no file names: the dataset, its version and its size name them
        sources = f"{args.dataset_name}\n{args.dataset_config_name}\n{args.dataset_split}\n{args.dataset_revision}\n{sources}"
    model = args.pretrained_model_name_or_path
    return {
        "format": PREPARED_FORMAT,
        "version": PREPARED_VERSION,
        "resolution": args.resolution,
        "scale": args.degradation.scale,
        "has_latents": args.cache_latents,
        "has_text_embeddings": args.cache_text_embeddings,
        "num_samples": 0,
        "complete": False,
        "failed_sources": [],
        "degradation": args.degradation.to_dict(),
        "vae": model if args.cache_latents else None,
        "text_encoders": model if args.cache_text_embeddings else None,
        "max_sequence_length": args.max_sequence_length if args.cache_text_embeddings else None,
        "dtype": args.dtype if args.cache_latents or args.cache_text_embeddings else None,
        "seed": args.seed,
        "crops_per_image": args.crops_per_image,
        "captions": args.captions,
        "caption_model": args.caption_model if args.captions == "model" else None,
        "caption_prompt": args.caption_prompt if args.captions == "model" else None,
        "input_dir": str(args.input_dir) if args.input_dir is not None else None,
        "source_dataset": None
        if args.dataset_name is None
        else {
            "name": args.dataset_name,
            "config": args.dataset_config_name,
            "split": args.dataset_split,
            "revision": args.dataset_revision,
            "image_column": args.image_column,
            "caption_column": args.caption_column,
        },
        "num_source_images": len(images),
        "sources_sha256": hashlib.sha256(sources.encode("utf-8")).hexdigest(),
    }


def check_resumable(output_dir: Path, info: dict[str, Any]) -> None:
    """Refuse to add samples to a folder prepared with other settings (its samples would not match)."""
    path = output_dir / "dataset.json"
    if not path.is_file():
        if any((output_dir / "samples").glob("*.safetensors")):
            raise ValueError(f"{output_dir} holds samples but no dataset.json; use another --output_dir.")
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    if previous.get("format") != PREPARED_FORMAT or previous.get("version") != PREPARED_VERSION:
        raise ValueError(f"{path} is not a {PREPARED_FORMAT!r} version {PREPARED_VERSION} dataset.")
    changed = [key for key in RESUME_KEYS if previous.get(key) != info[key]]
    if changed:
        raise ValueError(
            f"{output_dir} was prepared with other settings or source images ({', '.join(changed)} differ); "
            "resume with the same arguments and images, or use another --output_dir."
        )


def write_chunk(
    items: list[dict[str, Any]],
    samples_dir: Path,
    args: argparse.Namespace,
    vae: AutoencoderKL | None,
    text_pipeline: StableDiffusion3Pipeline | None,
    captioner: Captioner | None,
) -> list[str]:
    """Caption and encode one batch of readable samples, write the pending ones; returns the names written."""
    hr = torch.stack([item["hr"] for item in items]).float() / 255
    lr = torch.stack([item["lr"] for item in items]).float() / 255
    if captioner is not None:
        generated = captioner([PIL.Image.fromarray(item["hr"].permute(1, 2, 0).numpy()) for item in items])
        for item, caption in zip(items, generated, strict=True):
            if item["pending"]:
                item["caption"] = caption
    extra: dict[str, torch.Tensor] = {}
    if vae is not None:
        indices = [item["index"] for item in items]
        hr_generators = [seeded(args.seed, index, HR_LATENT_STREAM) for index in indices]
        lr_generators = [seeded(args.seed, index, LR_LATENT_STREAM) for index in indices]
        # The LR is encoded after a bicubic upscale back to the HR size with the released training's kernel (torch's,
        # a = -0.75: `image_processing.resize`); inference resizes with PIL's (`pil_bicubic_resize`).
        extra["hr_latents"] = encode_latents(vae, hr, hr_generators)
        extra["lr_latents"] = encode_latents(vae, resize(lr, (args.resolution, args.resolution)), lr_generators)
    if text_pipeline is not None:
        extra["prompt_embeds"], extra["pooled_prompt_embeds"] = encode_text(
            text_pipeline, [item["caption"] for item in items], args.max_sequence_length
        )
    names = []
    for position, item in enumerate(items):
        if item["pending"]:
            tensors = {"hr": item["hr"], "lr": item["lr"]}
            tensors.update({key: value[position].clone() for key, value in extra.items()})
            names.append(sample_name(item["index"]))
            metadata = {"caption": item["caption"], "source": item["source"]}
            atomic_save_file(tensors, samples_dir / names[-1], metadata)
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir, samples_dir = args.output_dir, args.output_dir / "samples"
    try:
        images = SourceImages(args)
    except ValueError as error:  # the library names its parameters, mapped to their flags
        terms = CommandLineTerms(build_parser(), aliases=DATASET_OPTIONS)
        print(f"prepare_dataset.py: error: {terms(one_line(error))}", file=sys.stderr)
        return 2
    total = len(images) * args.crops_per_image
    if args.max_samples is not None:
        total = min(total, args.max_samples)

    info = dataset_info(args, images)
    try:
        check_resumable(output_dir, info)
    except ValueError as error:
        print(f"prepare_dataset.py: error: {error}", file=sys.stderr)
        return 2
    samples_dir.mkdir(parents=True, exist_ok=True)
    for folder in (output_dir, samples_dir):  # what a killed run left; never a running one's file
        remove_stale_temporary_files(folder, suffixes=(".safetensors", ".json"))
    written = {path.name for path in samples_dir.glob("*.safetensors")}
    info["num_samples"] = len(written)
    atomic_write_json(info, output_dir / "dataset.json")

    # Batches are fixed, aligned runs of indices, recomputed whole when any member is missing: a recreated sample
    # goes through exactly the same encoder batch as in an uninterrupted run, so its tensors are the same.
    chunks = [list(range(start, min(start + args.batch_size, total))) for start in range(0, total, args.batch_size)]
    chunks = [chunk for chunk in chunks if any(sample_name(index) not in written for index in chunk)]

    device, dtype = resolve_device(args.device), DTYPES[args.dtype]
    vae = text_pipeline = captioner = None
    if args.cache_latents and chunks:
        vae = AutoencoderKL.from_pretrained(args.pretrained_model_name_or_path, subfolder="vae", dtype=dtype)
        vae.to(device)
        vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if args.resolution % vae_scale_factor:
            raise ValueError(f"--resolution must be divisible by the VAE's scale factor ({vae_scale_factor}).")
    empty_prompt_path = output_dir / "empty_prompt.safetensors"
    if args.cache_text_embeddings and (chunks or not empty_prompt_path.exists()):
        text_pipeline = load_text_pipeline(args.pretrained_model_name_or_path, dtype).to(device)
        if not empty_prompt_path.exists():
            prompt_embeds, pooled_prompt_embeds = encode_text(text_pipeline, [""], args.max_sequence_length)
            atomic_save_file(
                {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_prompt_embeds}, empty_prompt_path
            )
    if args.captions == "model" and chunks:
        # Greedy, so that a resumed run recreates a sample's caption like its other tensors, and without the released
        # sentence filter, which belongs to the released inference instruction.
        captioner = Captioner(
            args.caption_model,
            prompt=args.caption_prompt,
            max_new_tokens=args.caption_max_new_tokens,
            temperature=0.0,
            filter_focus_sentences=False,
            batch_size=args.batch_size,
            device=device,
            dtype=dtype,
        )

    loader = DataLoader(
        PairSource(images, samples_dir, total, args),
        batch_sampler=chunks,
        collate_fn=keep_list,
        num_workers=args.dataloader_num_workers,
    )
    failed: dict[str, str] = {}
    new_samples = 0
    already_done = sum(sample_name(index) in written for index in range(total))
    with tqdm(total=total, initial=already_done, unit="sample", desc="Preparing samples") as progress:
        for items in loader:
            readable = []
            for item in items:
                if "error" not in item:
                    readable.append(item)
                elif item["source"] not in failed:
                    failed[item["source"]] = item["error"]
                    tqdm.write(f"error: {item['error']} (skipped)", file=sys.stderr)
            if any(item["pending"] for item in readable):
                names = write_chunk(readable, samples_dir, args, vae, text_pipeline, captioner)
                written.update(names)
                new_samples += len(names)
                info["num_samples"] = len(written)
                atomic_write_json(info, output_dir / "dataset.json")
            progress.update(sum(item.get("pending", True) for item in items))

    info.update(num_samples=len(written), complete=True, failed_sources=sorted(failed))
    atomic_write_json(info, output_dir / "dataset.json")
    print(f"{output_dir}: {new_samples} new samples, {len(written)} in all.")
    if args.export_dataset is not None:
        repo_id = args.hub_dataset_id or args.export_dataset.name
        export_prepared_dataset(output_dir, args.export_dataset, shard_size=args.shard_size, repo_id=repo_id)
        print(f"{args.export_dataset}: the {len(written)} pairs as a 🤗 dataset (train with --dataset_name).")
        if args.push_to_hub:
            repo_id = push_prepared_dataset(
                args.export_dataset, repo_id, token=args.hub_token, private=args.hub_private or None
            )
            print(f"uploaded to the Hub dataset {repo_id}.")
    if failed:
        print(f"{len(failed)} source image(s) could not be read and were skipped:", file=sys.stderr)
        for source, error in sorted(failed.items()):
            print(f"  {source}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
