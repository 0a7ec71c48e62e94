#!/usr/bin/env python
# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Train or fine-tune DiT4SR (the released recipe by default) with accelerate.

    accelerate launch examples/train_dit4sr.py \
        --pretrained_model_name_or_path stabilityai/stable-diffusion-3.5-medium \
        --init_from_sd3 --train_data_dir /data/hr_photos --output_dir dit4sr-mine --mixed_precision fp16

The authors' recipes: `--init_from_sd3` trains a new model like `dit4sr_q` and `dit4sr_f` (their
`train_dit4sr.py`); `--init_from_sd3 --lr_key_source lr` like `dit4sr_r1` (their `train_dit4sr_r1.py`, the LR tokens
attending with keys of their own). Without `--init_from_sd3`, training fine-tunes a released or saved transformer.

Data comes either as HR photos, degraded on the accelerator at every step (Real-ESRGAN second-order degradation,
SeeSR's parameters), or as pairs written by `examples/prepare_dataset.py` (cached LR/HR pairs, latents and text
embeddings); from a folder, or from 🤗 datasets (`--dataset_name`: the Hub, parquet, WebDataset, image folders;
several mixed with `--dataset_weights`; `--streaming` across processes). See docs/training.md and docs/data.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed
from diffusers import SD3Transformer2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
from diffusers.utils.torch_utils import empty_device_cache
from PIL import Image
from tqdm.auto import tqdm

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline
from diffusers_dit4sr.cli.messages import DATASET_OPTIONS, CommandLineTerms
from diffusers_dit4sr.errors import one_line
from diffusers_dit4sr.file_utils import atomic_write_folder, atomic_write_path
from diffusers_dit4sr.hub import RELEASED_DIT4SR_MODEL, RELEASED_SD3_MODEL, make_training_model_card
from diffusers_dit4sr.pipelines import DEFAULT_MAX_SEQUENCE_LENGTH
from diffusers_dit4sr.training import (
    DegradationConfig,
    HRImageDataset,
    PreparedDataset,
    RealESRGANDegradation,
    collate_samples,
)
from diffusers_dit4sr.training.checkpoints import (
    CHECKPOINT_MANIFEST,
    check_checkpoint,
    checkpoint_step,
    latest_checkpoint,
    save_checkpoint,
)
from diffusers_dit4sr.training.datasets import derive_seed

logger = get_logger(__name__)

DIT4SR_OPTIONS = ("lr_key_source", "lr_attention", "lr_residual", "lr_injection")
DEFAULT_LORA_TARGETS = [
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
    "to_q_control",
    "to_v_control",
    "to_out_control",
]


def str_to_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_argument_group("models")
    models.add_argument(
        "--pretrained_model_name_or_path",
        default=RELEASED_SD3_MODEL,
        help="SD3.5 (or converted DiT4SR) pipeline: VAE, text encoders, scheduler; and the SD3 transformer for --init_from_sd3.",
    )
    models.add_argument("--revision", default=None)
    models.add_argument("--variant", default=None, help="weights variant of the pretrained files, e.g. fp16")
    models.add_argument(
        "--transformer_model_name_or_path",
        default=RELEASED_DIT4SR_MODEL,
        help="DiT4SR transformer to start from (ignored with --init_from_sd3).",
    )
    models.add_argument("--transformer_subfolder", default="dit4sr_q/transformer")
    models.add_argument(
        "--init_from_sd3",
        action="store_true",
        help="initialize a new DiT4SR from the SD3 transformer of --pretrained_model_name_or_path",
    )
    models.add_argument(
        "--lr_key_source",
        choices=["noise", "lr"],
        default=None,
        help="the LR tokens' attention keys: 'noise' as dit4sr_q/dit4sr_f were trained, 'lr' (the paper's Eq. 1) as "
        "dit4sr_r1 was; with --init_from_sd3, 'lr' is the r1 recipe (default: the starting checkpoint's, 'noise' "
        "with --init_from_sd3)",
    )
    models.add_argument("--lr_attention", type=str_to_bool, default=None)
    models.add_argument("--lr_residual", type=str_to_bool, default=None)
    models.add_argument("--lr_injection", choices=["conv", "linear", "none"], default=None)
    models.add_argument(
        "--lr_injection_scale",
        type=float,
        default=1.2,
        help="strength of the LR injection in the training forward pass; the authors' released model code (r1 "
        "included) multiplies it by 1.2 in training as at inference, although a comment there says 1.0 was meant "
        "for training (default: 1.2, as released)",
    )
    models.add_argument(
        "--trainable",
        choices=["lr_branch", "full", "lora"],
        default="lr_branch",
        help="lr_branch: the released recipe (parameters named *control*); full; or lora adapters.",
    )
    models.add_argument("--lora_rank", type=int, default=16)
    models.add_argument("--lora_alpha", type=int, default=None, help="defaults to --lora_rank")
    models.add_argument(
        "--lora_target_modules",
        nargs="+",
        default=None,
        help="default: SD3's attention projections and the LR ones that the model uses (to_k_control only with LR "
        "keys of their own, e.g. dit4sr_r1)",
    )

    data = parser.add_argument_group("data")
    data.add_argument("--train_data_dir", default=None, help="folder of HR images, degraded on the fly")
    data.add_argument("--prepared_data_dir", default=None, help="folder written by examples/prepare_dataset.py")
    # 🤗 datasets: options that take one value, or one per --dataset_name.
    data.add_argument(
        "--dataset_name",
        nargs="+",
        default=None,
        help="🤗 dataset(s) of HR images, or of pairs written by prepare_dataset.py --export_dataset: Hub ids, local "
        "folders datasets.load_dataset reads (image folders, parquet, WebDataset tars), or parquet / .tar files (paths "
        "or glob patterns); several are mixed (--dataset_weights)",
    )
    data.add_argument("--dataset_config_name", nargs="+", default=None, help="the dataset's configuration (subset)")
    data.add_argument(
        "--dataset_split", nargs="+", default=["train"], help='split to read; "train[:N]": its first N rows'
    )
    data.add_argument("--dataset_revision", nargs="+", default=None, help="branch, tag or commit of a Hub dataset")
    data.add_argument(
        "--dataset_weights",
        nargs="+",
        type=float,
        default=None,
        help="share of the samples each --dataset_name gives (normalized; default: proportional to their sizes, "
        "every image equally often)",
    )
    data.add_argument("--image_column", nargs="+", default=["image"], help="column of the HR images (default: image)")
    data.add_argument(
        "--caption_column", nargs="+", default=None, help="column of the captions (default: empty captions)"
    )
    data.add_argument("--max_train_samples", type=int, default=None, help="keep only the first N (mixed) samples")
    data.add_argument("--cache_dir", default=None, help="🤗 Datasets' cache of downloads (default: its own)")
    data.add_argument(
        "--streaming",
        action="store_true",
        help="stream --dataset_name instead of downloading it: each process reads its own shards, resumable; needs "
        "--max_train_steps",
    )
    data.add_argument(
        "--shuffle_buffer_size",
        type=int,
        default=256,
        help="--streaming: rows per shuffled block, held in memory by each process and worker (default: %(default)s)",
    )
    data.add_argument("--resolution", type=int, default=512)
    data.add_argument("--caption_extension", default=".txt")
    data.add_argument("--degradation_config", default=None, help="JSON/YAML DegradationConfig (default: released)")
    data.add_argument("--proportion_empty_prompts", type=float, default=0.2)
    data.add_argument("--max_sequence_length", type=int, default=77)
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", default="dit4sr-training")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--train_batch_size", type=int, default=8)
    training.add_argument("--num_train_epochs", type=int, default=1)
    training.add_argument("--max_train_steps", type=int, default=None)
    training.add_argument("--gradient_accumulation_steps", type=int, default=1)
    training.add_argument("--gradient_checkpointing", action="store_true")
    training.add_argument("--learning_rate", type=float, default=5e-5)
    training.add_argument("--scale_lr", action="store_true")
    training.add_argument("--lr_scheduler", default="constant_with_warmup")
    training.add_argument("--lr_warmup_steps", type=int, default=500)
    training.add_argument("--lr_num_cycles", type=int, default=1)
    training.add_argument("--lr_power", type=float, default=1.0)
    training.add_argument("--use_8bit_adam", action="store_true")
    training.add_argument("--adam_beta1", type=float, default=0.9)
    training.add_argument("--adam_beta2", type=float, default=0.999)
    training.add_argument("--adam_weight_decay", type=float, default=1e-2)
    training.add_argument("--adam_epsilon", type=float, default=1e-8)
    training.add_argument("--max_grad_norm", type=float, default=1.0)
    training.add_argument(
        "--weighting_scheme", default="logit_normal", choices=["sigma_sqrt", "logit_normal", "mode", "cosmap", "none"]
    )
    training.add_argument("--logit_mean", type=float, default=0.0)
    training.add_argument("--logit_std", type=float, default=1.0)
    training.add_argument("--mode_scale", type=float, default=1.29)
    training.add_argument(
        "--precondition_outputs",
        type=int,
        default=1,
        help="1: the x0 target of diffusers' SD3 examples (released); 0: the velocity target",
    )
    training.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    training.add_argument("--allow_tf32", action="store_true")
    training.add_argument("--set_grads_to_none", action="store_true")

    saving = parser.add_argument_group("checkpoints, validation, logging")
    saving.add_argument("--checkpointing_steps", type=int, default=10000)
    saving.add_argument("--checkpoints_total_limit", type=int, default=None)
    saving.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder, or "latest"')
    saving.add_argument(
        "--validation_image",
        nargs="+",
        default=None,
        help="HR images: degraded with a fixed seed, upscaled, logged as LR | SR | HR grids",
    )
    saving.add_argument("--validation_prompt", nargs="+", default=None, help="one caption per validation image")
    saving.add_argument("--validation_steps", type=int, default=1000)
    saving.add_argument("--validation_inference_steps", type=int, default=40)
    saving.add_argument(
        "--validation_max_sequence_length",
        type=int,
        default=DEFAULT_MAX_SEQUENCE_LENGTH,
        help="T5 tokens of the validation prompts (default: %(default)s, the released inference's)",
    )
    saving.add_argument("--report_to", default="tensorboard", help='"tensorboard", "wandb", "all" or "none"')
    saving.add_argument("--logging_dir", default="logs")
    saving.add_argument("--tracker_project_name", default="train_dit4sr")
    saving.add_argument("--push_to_hub", action="store_true")
    saving.add_argument("--hub_model_id", default=None)
    saving.add_argument("--hub_token", default=None)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if sum(source is not None for source in (args.train_data_dir, args.prepared_data_dir, args.dataset_name)) != 1:
        parser.error("pass exactly one of --train_data_dir, --prepared_data_dir and --dataset_name")
    if args.dataset_name is not None:
        for name in ("dataset_config_name", "dataset_split", "dataset_revision", "image_column", "caption_column"):
            values = getattr(args, name)
            if values is not None and len(values) not in (1, len(args.dataset_name)):
                parser.error(f"--{name} needs one value, or one per --dataset_name ({len(args.dataset_name)})")
        if args.dataset_weights is not None and len(args.dataset_weights) != len(args.dataset_name):
            parser.error(f"--dataset_weights needs one weight per --dataset_name ({len(args.dataset_name)})")
    elif args.streaming:
        parser.error("--streaming needs --dataset_name")
    if args.streaming and args.max_train_steps is None:
        parser.error("--streaming needs --max_train_steps (a stream's length is not known in advance)")
    if not 0 <= args.proportion_empty_prompts <= 1:
        parser.error("--proportion_empty_prompts must be in [0, 1]")
    if args.validation_prompt is not None and args.validation_image is not None:
        if len(args.validation_prompt) not in (1, len(args.validation_image)):
            parser.error("--validation_prompt needs one prompt, or one per --validation_image")
    if args.trainable == "lora" and args.lora_rank < 1:
        parser.error("--lora_rank must be >= 1")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error("--checkpoints_total_limit must be >= 1")
    return args


def usage_error(accelerator: Accelerator, message: str) -> NoReturn:
    """Stops like argparse does (one line, exit code 2), for a setting found unusable after parsing."""
    if accelerator.is_main_process:
        print(f"train_dit4sr.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_setup(accelerator: Accelerator, args: argparse.Namespace, num_samples: int) -> None:
    """Refuses, before any model loads, what would fail later: fp16 on the CPU (its convolutions have no half
    kernels) and fewer samples than one batch across the processes (no batch is left after `drop_last`)."""
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        usage_error(accelerator, "--mixed_precision fp16 does not run on the CPU; use bf16 or no")
    if args.streaming:  # `num_samples`: the fewest rows (up to one batch) a process's share of the stream has
        if num_samples < args.train_batch_size:
            usage_error(
                accelerator,
                f"--dataset_name --streaming gives a process only {num_samples} sample(s) an epoch"
                f"{limited_by(args)}, fewer than one batch: --train_batch_size {args.train_batch_size}; lower "
                "--train_batch_size or use fewer processes",
            )
        return
    needed = args.train_batch_size * accelerator.num_processes
    if num_samples < needed:
        source = next(
            flag
            for flag, value in (
                ("--train_data_dir", args.train_data_dir),
                ("--prepared_data_dir", args.prepared_data_dir),
                ("--dataset_name", args.dataset_name),
            )
            if value is not None
        )
        source += limited_by(args)
        usage_error(
            accelerator,
            f"{source} holds {num_samples} sample(s), fewer than one batch: --train_batch_size "
            f"{args.train_batch_size} x {accelerator.num_processes} process(es) = {needed}; lower --train_batch_size",
        )


def load_transformer(args: argparse.Namespace) -> DiT4SRTransformer2DModel:
    """The released (or any saved) DiT4SR transformer, or a new one initialized from SD3 (paper, Sec. 3.6)."""
    options = {name: getattr(args, name) for name in DIT4SR_OPTIONS if getattr(args, name) is not None}
    if args.init_from_sd3:
        sd3 = SD3Transformer2DModel.from_pretrained(
            args.pretrained_model_name_or_path, subfolder="transformer", revision=args.revision, variant=args.variant
        )
        return DiT4SRTransformer2DModel.from_transformer(sd3, **options)
    return DiT4SRTransformer2DModel.from_pretrained(
        args.transformer_model_name_or_path, subfolder=args.transformer_subfolder or None, **options
    )


def default_lora_targets(transformer: DiT4SRTransformer2DModel) -> list[str]:
    """`DEFAULT_LORA_TARGETS`, plus `to_k_control` where the LR tokens use keys of their own (`lr_key_source="lr"`,
    as in dit4sr_r1, or SD3 without a key norm): in the released key mode it receives no gradient."""
    uses_lr_keys = any(".to_k_control." in name for name in transformer.lr_branch_parameters())
    return DEFAULT_LORA_TARGETS + ["to_k_control"] * uses_lr_keys


def select_trainable_parameters(transformer: DiT4SRTransformer2DModel, args: argparse.Namespace) -> list:
    """Freezes the transformer, then unfreezes (or adds) what `--trainable` names; returns the trainable parameters."""
    transformer.requires_grad_(False)
    if args.trainable == "lora":
        from peft import LoraConfig

        transformer.add_adapter(
            LoraConfig(
                r=args.lora_rank,
                lora_alpha=args.lora_alpha or args.lora_rank,
                init_lora_weights="gaussian",
                target_modules=args.lora_target_modules or default_lora_targets(transformer),
            )
        )
        return [param for param in transformer.parameters() if param.requires_grad]
    if args.trainable == "lr_branch":
        parameters = transformer.lr_branch_parameters()
    else:
        unused = (
            transformer.lr_branch_parameters(include_unused=True).keys() - transformer.lr_branch_parameters().keys()
        )
        parameters = {name: param for name, param in transformer.named_parameters() if name not in unused}
    for param in parameters.values():
        param.requires_grad_(True)
    return list(parameters.values())


def limited_by(args: argparse.Namespace) -> str:
    return f" (--max_train_samples {args.max_train_samples})" if args.max_train_samples is not None else ""


def as_flags(error: Exception) -> str:
    """A library error on one line, with the parameters it names (`name`) replaced by this script's options."""
    terms = CommandLineTerms(
        build_parser(),
        aliases={**DATASET_OPTIONS, "batch_size": "train_batch_size", "num_workers": "dataloader_num_workers"},
    )
    return terms(one_line(error))


def make_hub_dataset(args: argparse.Namespace, accelerator: Accelerator) -> torch.utils.data.Dataset:
    """The --dataset_name datasets, opened, checked and mixed: map-style, or this process's share of the stream."""
    from diffusers_dit4sr.training.hf_datasets import DatasetSource, RowsDataset, load_training_rows
    from diffusers_dit4sr.training.hf_streaming import StreamedRowsDataset

    count = len(args.dataset_name)

    def each(values: list | None) -> list:
        return [None] * count if values is None else values * count if len(values) == 1 else values

    sources = [
        DatasetSource(
            name=name, config=config, split=split, revision=revision, image_column=image, caption_column=caption
        )
        for name, config, split, revision, image, caption in zip(
            args.dataset_name,
            each(args.dataset_config_name),
            each(args.dataset_split),
            each(args.dataset_revision),
            each(args.image_column),
            each(args.caption_column),
            strict=True,
        )
    ]
    # The main process opens the datasets first: a download or a conversion to Arrow happens once.
    with accelerator.main_process_first():
        try:
            rows = load_training_rows(
                sources,
                weights=args.dataset_weights,
                streaming=args.streaming,
                seed=args.seed,
                max_samples=args.max_train_samples,
                cache_dir=args.cache_dir,
                token=args.hub_token,
                process_index=accelerator.process_index,
                num_processes=accelerator.num_processes,
            )
        except ValueError as error:  # raised after the context: the other processes wait for the main one
            rows, problem = None, error
    if rows is None:
        raise problem
    if args.streaming:
        dataset = StreamedRowsDataset(
            rows,
            resolution=args.resolution,
            seed=args.seed,
            shuffle_buffer_size=args.shuffle_buffer_size,
            token=args.hub_token,
        )
    else:
        dataset = RowsDataset(rows, resolution=args.resolution, seed=args.seed, token=args.hub_token)
    dataset.first_sample()  # a column of non-images, or prepared pairs of another size, stop here
    return dataset


def make_dataset(args: argparse.Namespace) -> torch.utils.data.Dataset:
    if args.prepared_data_dir is not None:
        dataset = PreparedDataset(args.prepared_data_dir)
        if dataset.resolution != args.resolution:
            raise ValueError(
                f"--prepared_data_dir holds {dataset.resolution} px crops but --resolution is {args.resolution}."
            )
        return dataset
    return HRImageDataset(
        args.train_data_dir, resolution=args.resolution, caption_extension=args.caption_extension, seed=args.seed
    )


def encode_images(vae, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SD3 latents of images in [0, 1] (section 1 of the spec: sampled, shifted and scaled)."""
    posterior = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist
    latents = posterior.sample(generator=generator)
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


class BatchPreparer:
    """Turns a data batch into the transformer's inputs: HR and LR latents, text embeddings (with caption dropout)."""

    def __init__(self, pipeline: StableDiffusion3SRPipeline, dataset, args: argparse.Namespace, device, dtype):
        self.pipeline, self.args, self.device, self.dtype = pipeline, args, device, dtype
        self.degradation = None
        prepared = isinstance(dataset, PreparedDataset) or getattr(dataset, "prepared", False)
        if not prepared:
            config = (
                DegradationConfig.load(args.degradation_config) if args.degradation_config else DegradationConfig()
            )
            self.degradation = RealESRGANDegradation(config)
        self.empty_prompt = dataset.empty_prompt_embeds() if prepared else None
        if self.empty_prompt is None:
            self.empty_prompt = self.encode_text([""])

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompt_embeds, _, pooled_prompt_embeds, _ = self.pipeline.encode_prompt(
            prompt=captions,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.args.max_sequence_length,
        )
        return prompt_embeds, pooled_prompt_embeds

    @torch.no_grad()
    def __call__(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        vae = self.pipeline.vae
        if "hr_latents" in batch:
            hr_latents, lr_latents = batch["hr_latents"], batch["lr_latents"]
        else:
            if self.degradation is not None:
                lr, hr = self.degradation(batch["pixel_values"].to(self.device), generator=generator)
            else:
                lr, hr = batch["lr"].to(self.device), batch["hr"].to(self.device)
            # The LR image is bicubic-upscaled back to the HR size before encoding, with torch's kernel (a = -0.75), as the
            # released training did (inference enlarges with PIL's kernel, `image_processing.pil_bicubic_resize`).
            lr = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
            hr_latents, lr_latents = encode_images(vae, hr, generator), encode_images(vae, lr, generator)

        if "prompt_embeds" in batch:
            prompt_embeds, pooled_prompt_embeds = batch["prompt_embeds"], batch["pooled_prompt_embeds"]
        else:
            prompt_embeds, pooled_prompt_embeds = self.encode_text(list(batch["caption"]))
        prompt_embeds = prompt_embeds.to(self.device)
        pooled_prompt_embeds = pooled_prompt_embeds.to(self.device)
        # Released recipe: with probability `proportion_empty_prompts` a caption becomes the empty prompt.
        drop = (
            torch.rand(len(prompt_embeds), generator=generator, device=generator.device)
            < self.args.proportion_empty_prompts
        )
        drop = drop.to(self.device)
        empty_embeds, empty_pooled = (tensor.to(self.device) for tensor in self.empty_prompt)
        prompt_embeds = torch.where(drop[:, None, None], empty_embeds[:1], prompt_embeds)
        pooled_prompt_embeds = torch.where(drop[:, None], empty_pooled[:1], pooled_prompt_embeds)
        return {
            "hr_latents": hr_latents.to(self.device, self.dtype),
            "lr_latents": lr_latents.to(self.device, self.dtype),
            "prompt_embeds": prompt_embeds.to(self.dtype),
            "pooled_prompt_embeds": pooled_prompt_embeds.to(self.dtype),
        }


def flow_matching_loss(
    transformer, scheduler, inputs: dict[str, torch.Tensor], args: argparse.Namespace, generator: torch.Generator
) -> torch.Tensor:
    """SD3's rectified-flow objective (spec section 5), conditioned on the LR latent."""
    hr_latents = inputs["hr_latents"]
    batch_size = hr_latents.shape[0]
    u = compute_density_for_timestep_sampling(
        weighting_scheme=args.weighting_scheme,
        batch_size=batch_size,
        logit_mean=args.logit_mean,
        logit_std=args.logit_std,
        mode_scale=args.mode_scale,
        device=generator.device,
        generator=generator,
    )
    indices = (u * scheduler.config.num_train_timesteps).long().clamp(max=scheduler.config.num_train_timesteps - 1)
    timesteps = scheduler.timesteps.to(hr_latents.device)[indices.to(hr_latents.device)]
    sigmas = scheduler.sigmas.to(hr_latents.device, hr_latents.dtype)[indices.to(hr_latents.device)].view(-1, 1, 1, 1)

    noise = torch.randn(hr_latents.shape, generator=generator, device=generator.device).to(hr_latents)
    noisy_latents = (1.0 - sigmas) * hr_latents + sigmas * noise
    model_pred = transformer(
        hidden_states=noisy_latents,
        lr_hidden_states=inputs["lr_latents"],
        encoder_hidden_states=inputs["prompt_embeds"],
        pooled_projections=inputs["pooled_prompt_embeds"],
        timestep=timesteps,
        lr_injection_scale=args.lr_injection_scale,
        return_dict=False,
    )[0]
    if args.precondition_outputs:
        model_pred = model_pred * (-sigmas) + noisy_latents
        target = hr_latents
    else:
        target = noise - hr_latents
    weighting = compute_loss_weighting_for_sd3(weighting_scheme=args.weighting_scheme, sigmas=sigmas)
    loss = (weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(batch_size, -1).mean(dim=1)
    return loss.mean()


def step_generator(seed: int, step: int, micro_step: int, process_index: int, device) -> torch.Generator:
    """Each micro-step's randomness depends only on where it is: resuming from a checkpoint repeats it exactly."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, step, micro_step, process_index))


def resume_checkpoint(args: argparse.Namespace) -> Path:
    """The checkpoint `--resume_from_checkpoint` names: a folder, or "latest", the newest whole one in --output_dir
    (the newer ones it passes over are logged, with why)."""
    if args.resume_from_checkpoint != "latest":
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir():
            raise ValueError(f"--resume_from_checkpoint {path}: no such checkpoint folder.")
        problem = check_checkpoint(path)
        if problem is not None and (path / CHECKPOINT_MANIFEST).exists():
            raise ValueError(f"--resume_from_checkpoint {path}: not a whole checkpoint, {problem}.")
        if problem is not None:
            logger.warning(f"{path} has no {CHECKPOINT_MANIFEST} to check it against: resuming from it as it is")
        return path
    latest = latest_checkpoint(args.output_dir)
    for path, problem in latest.skipped:
        logger.warning(f"skipping {path}: {problem}")
    if latest.path is None:
        passed = f" ({len(latest.skipped)} not whole)" if latest.skipped else ""
        raise ValueError(f"--resume_from_checkpoint latest: no whole checkpoint in {args.output_dir}{passed}.")
    newer = f", the newest whole one ({len(latest.skipped)} newer not)" if latest.skipped else ""
    logger.info(f"resuming from {latest.path}{newer}")
    return latest.path


@torch.no_grad()
def validation_prompt(args: argparse.Namespace, index: int) -> str:
    prompts = args.validation_prompt or [""]
    return prompts[index] if len(prompts) > 1 else prompts[0]


@torch.no_grad()
def encode_validation_prompts(pipeline: StableDiffusion3SRPipeline, args: argparse.Namespace, device) -> list[dict]:
    """Per validation image, the prompt and negative-prompt embeddings the pipeline would compute for it."""
    embeddings = []
    for index in range(len(args.validation_image)):
        # The pipeline's own defaults (added prompt, negative prompt), so the images match a call with `prompt=`.
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
            pipeline.encode_prompt(
                prompt=validation_prompt(args, index),
                device=device,
                max_sequence_length=args.validation_max_sequence_length,
            )
        )
        embeddings.append(
            {
                "prompt_embeds": prompt_embeds,
                "negative_prompt_embeds": negative_prompt_embeds,
                "pooled_prompt_embeds": pooled_prompt_embeds,
                "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds,
            }
        )
    return embeddings


def log_validation(
    pipeline,
    transformer,
    accelerator,
    args,
    global_step: int,
    degradation: RealESRGANDegradation,
    prompt_embeddings: list[dict] | None = None,
):
    """Degrades each validation HR image with a fixed seed, upscales it, and logs LR | SR | HR.

    `prompt_embeddings` (from `encode_validation_prompts`) replace the prompts when the text encoders are not on the
    accelerator.
    """
    logger.info(f"running validation at step {global_step}")
    was_training = transformer.training
    transformer.eval()
    grids = []
    for index, path in enumerate(args.validation_image):
        hr = Image.open(path).convert("RGB")
        hr = hr.resize(
            (
                (hr.width // degradation.config.scale) * degradation.config.scale,
                (hr.height // degradation.config.scale) * degradation.config.scale,
            ),
            Image.BICUBIC,
        )
        hr_tensor = torch.from_numpy(np.array(hr)).permute(2, 0, 1)[None].float().div(255)
        lr, _ = degradation(hr_tensor, generator=torch.Generator().manual_seed(args.seed + index))
        text = prompt_embeddings[index] if prompt_embeddings else {"prompt": validation_prompt(args, index)}
        with accelerator.autocast():
            (sr,) = pipeline(
                image=lr,
                **text,
                max_sequence_length=args.validation_max_sequence_length,
                upscale=degradation.config.scale,
                num_inference_steps=args.validation_inference_steps,
                generator=torch.Generator(device=accelerator.device).manual_seed(args.seed),
            ).images
        lr_view = Image.fromarray((lr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize(
            hr.size, Image.NEAREST
        )
        grid = Image.new("RGB", (hr.width * 3, hr.height))
        for column, image in enumerate((lr_view, sr.resize(hr.size), hr)):
            grid.paste(image, (column * hr.width, 0))
        with atomic_write_path(Path(args.output_dir) / "validation" / f"step-{global_step:08d}-{index}.png") as path:
            grid.save(path, format="PNG")
        grids.append(np.asarray(grid))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation (LR | SR | HR)", np.stack(grids), global_step, dataformats="NHWC")
    if was_training:
        transformer.train()


def save_final(accelerator: Accelerator, transformer, args: argparse.Namespace, global_step: int) -> None:
    """Saves the trained weights (a crash leaves the previous ones or the new ones, whole: atomic and durable writes)
    and, with --push_to_hub, uploads them with a model card."""
    transformer = accelerator.unwrap_model(transformer)
    if args.trainable == "lora":
        from peft.utils import get_peft_model_state_dict

        with atomic_write_path(Path(args.output_dir) / "pytorch_lora_weights.safetensors") as path:
            StableDiffusion3SRPipeline.save_lora_weights(
                path.parent, transformer_lora_layers=get_peft_model_state_dict(transformer), weight_name=path.name
            )
    else:
        with atomic_write_folder(Path(args.output_dir) / "transformer") as folder:
            transformer.save_pretrained(folder)
    if args.push_to_hub:
        from huggingface_hub import create_repo, upload_folder

        repo_id = create_repo(
            args.hub_model_id or Path(args.output_dir).name, exist_ok=True, token=args.hub_token
        ).repo_id
        start = (
            f"SD3 transformer of `{args.pretrained_model_name_or_path}`"
            if args.init_from_sd3
            else (f"`{args.transformer_model_name_or_path}` (`{args.transformer_subfolder}`)")
        )
        data = args.train_data_dir and "HR images degraded on the fly" or "a prepared dataset"
        if args.dataset_name:
            data = f"🤗 dataset(s) {', '.join(f'`{name}`' for name in args.dataset_name)}"
        summary = (
            f"- started from: {start}\n- LR attention keys: `lr_key_source={transformer.config.lr_key_source!r}`\n"
            f"- trained: `{args.trainable}`\n- data: {data}, {args.resolution} px crops\n"
            f"- optimization steps: {global_step}, batch {args.train_batch_size} per process x "
            f"{accelerator.num_processes} process(es) x {args.gradient_accumulation_steps} accumulation, "
            f"learning rate {args.learning_rate}"
        )
        card = make_training_model_card(repo_id, args.pretrained_model_name_or_path, args.trainable == "lora", summary)
        with atomic_write_path(Path(args.output_dir) / "README.md") as path:
            card.save(path)
        try:
            upload_folder(
                repo_id=repo_id,
                folder_path=args.output_dir,
                commit_message="DiT4SR training: final weights",
                # Checkpoints, logs and whatever an interrupted write left (*.incomplete folders, .*.tmp files) stay.
                ignore_patterns=["checkpoint-*/**", "logs/**", "validation/**", "*.incomplete/**", ".*.tmp"],
                token=args.hub_token,
            )
        except Exception:
            logger.error(
                f"the upload to {repo_id} failed; the weights are saved in {args.output_dir}: upload them with "
                f"`hf upload {repo_id} {args.output_dir} --exclude 'checkpoint-*/**' 'logs/**' 'validation/**'`"
            )
            raise


def main(argv: list[str] | None = None) -> dict:
    """Runs the training; returns `{"global_step": int, "loss": float}` of the last step."""
    args = parse_args(argv)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=Path(args.output_dir, args.logging_dir)
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    if args.dataset_name is None:
        dataset = make_dataset(args)
        num_samples = len(dataset)
    else:
        try:
            dataset = make_hub_dataset(args, accelerator)
            problem = None
        except ValueError as error:
            dataset, problem = None, as_flags(error)
        # Every process stops on a problem any of them found; a stream's shares may differ, the fewest rows decide.
        problems = [problem for problem in gather_object([problem]) if problem is not None]
        if problems:
            usage_error(accelerator, problems[0])
        if args.streaming:
            num_samples = min(gather_object([dataset.count_rows(limit=args.train_batch_size)]))
        else:
            num_samples = len(dataset)
    check_setup(accelerator, args, num_samples)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    transformer = load_transformer(args)
    pipeline = StableDiffusion3SRPipeline.from_pretrained(
        args.pretrained_model_name_or_path, transformer=transformer, revision=args.revision, variant=args.variant
    )
    pipeline.set_progress_bar_config(disable=True)
    text_encoders = [
        encoder
        for encoder in (pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3)
        if encoder is not None
    ]
    for component in (pipeline.vae, *text_encoders):
        component.requires_grad_(False).to(accelerator.device, dtype=weight_dtype)
    validation_prompt_embeddings = None
    if getattr(dataset, "has_text_embeddings", False):
        # Captions come cached, so the text encoders (T5-XXL alone is 8.6 GiB in bf16) only serve the validation
        # prompts: encoded now, before the transformer arrives, then the encoders leave the accelerator.
        if args.validation_image:
            validation_prompt_embeddings = encode_validation_prompts(pipeline, args, accelerator.device)
        for encoder in text_encoders:
            encoder.to("cpu")
        empty_device_cache()
    # The trainable weights stay in float32; mixed precision runs the forward under autocast.
    transformer.to(accelerator.device)
    trainable = select_trainable_parameters(transformer, args)
    if args.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    # Its own scheduler: validation's `set_timesteps` must not change the 1000 training timesteps and sigmas.
    scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)

    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise ImportError("--use_8bit_adam needs bitsandbytes: `pip install bitsandbytes`.") from error
        optimizer_class = bnb.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    optimizer = optimizer_class(
        trainable,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )

    stream = None
    if args.streaming:
        from diffusers_dit4sr.training.hf_streaming import StreamLoader

        # Each process streams its own shards: not `prepare`d (accelerate would read every batch on the main process
        # and dispatch it). Its position is saved with the checkpoints and restored on resume.
        stream = StreamLoader(dataset, batch_size=args.train_batch_size, num_workers=args.dataloader_num_workers)
        accelerator.register_for_checkpointing(stream)
        transformer, optimizer = accelerator.prepare(transformer, optimizer)
        steps_per_epoch = args.max_train_steps  # one endless pass: the loader starts the processes' epochs itself
    else:
        dataloader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.train_batch_size,
            shuffle=True,
            collate_fn=collate_samples,
            num_workers=args.dataloader_num_workers,
            drop_last=True,
        )
        transformer, optimizer, dataloader = accelerator.prepare(transformer, optimizer, dataloader)
        # After `prepare`: each process iterates over its own share of the batches.
        steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
        num_cycles=args.lr_num_cycles,
        power=args.lr_power,
    )
    lr_scheduler = accelerator.prepare(lr_scheduler)
    prepare_batch = BatchPreparer(pipeline, dataset, args, accelerator.device, weight_dtype)
    validation_degradation = prepare_batch.degradation or RealESRGANDegradation()

    if accelerator.is_main_process and args.report_to != "none":
        config = {key: value for key, value in vars(args).items() if isinstance(value, (int, float, str, bool))}
        accelerator.init_trackers(args.tracker_project_name, config=config)

    global_step, first_epoch, skip_batches = 0, 0, 0
    if args.resume_from_checkpoint:
        path = resume_checkpoint(args)
        accelerator.print(f"resuming from {path}")
        try:
            accelerator.load_state(str(path))
        except ValueError as error:  # the stream's position, saved with other process or worker counts
            usage_error(accelerator, f"--resume_from_checkpoint {path}: {as_flags(error)}")
        global_step = checkpoint_step(path)
        first_epoch = global_step // steps_per_epoch
        skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps
        if stream is not None:  # the stream continues from its restored position
            first_epoch = skip_batches = 0

    logger.info(
        f"training {sum(param.numel() for param in trainable):,} parameters ({args.trainable}) on "
        f"{'a stream of' if stream is not None else len(dataset)} samples for {args.max_train_steps} steps, batch {args.train_batch_size} x {accelerator.num_processes} "
        f"processes x {args.gradient_accumulation_steps} accumulation"
    )
    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process
    )
    loss_value = float("nan")
    for epoch in range(first_epoch, num_epochs):
        if stream is not None:
            batches = stream
        else:
            dataloader.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            batches = accelerator.skip_first_batches(dataloader, skip_batches) if epoch == first_epoch else dataloader
        for micro_step, batch in enumerate(batches):
            with accelerator.accumulate(transformer):
                generator = step_generator(
                    args.seed,
                    global_step,
                    micro_step % args.gradient_accumulation_steps,
                    accelerator.process_index,
                    accelerator.device,
                )
                inputs = prepare_batch(batch, generator)
                with accelerator.autocast():
                    loss = flow_matching_loss(transformer, scheduler, inputs, args, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=args.set_grads_to_none)

            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress_bar.update(1)
            loss_value = accelerator.gather(loss.detach()[None]).mean().item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {global_step}; lower --learning_rate.")
            accelerator.log({"loss": loss_value, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
            progress_bar.set_postfix(loss=f"{loss_value:.4f}")

            if global_step % args.checkpointing_steps == 0:
                if stream is not None:
                    stream.gather_positions()  # accelerate saves registered objects from the main process only
                # Every process writes its part; the checkpoint appears whole, and only then go the old ones.
                saved = save_checkpoint(
                    accelerator, args.output_dir, global_step, total_limit=args.checkpoints_total_limit
                )
                for old in saved.removed:
                    logger.info(f"removed {old}")
                logger.info(f"saved state to {saved.path}")
            if args.validation_image and global_step % args.validation_steps == 0 and accelerator.is_main_process:
                log_validation(
                    pipeline,
                    accelerator.unwrap_model(transformer),
                    accelerator,
                    args,
                    global_step,
                    validation_degradation,
                    validation_prompt_embeddings,
                )
            if global_step >= args.max_train_steps:
                break
        if global_step >= args.max_train_steps:
            break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final(accelerator, transformer, args, global_step)
    accelerator.end_training()
    return {"global_step": global_step, "loss": loss_value}


if __name__ == "__main__":
    main()
