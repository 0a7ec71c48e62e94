# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Converts a released DiT4SR model into one self-contained Diffusers pipeline folder (and optionally pushes it).

The released checkpoints (`acceptee/DiT4SR`) hold only the transformer, with an SD3-style config; inference also
needs the VAE, text encoders and scheduler of Stable Diffusion 3.5 medium. This script composes both into a
`StableDiffusion3SRPipeline`, saves it as safetensors with a model card, loads it back to check that the transformer
weights came through unchanged, and can upload it to the Hub:

    python scripts/convert_dit4sr_to_diffusers.py --variant q --output_dir dit4sr-q-diffusers
    python scripts/convert_dit4sr_to_diffusers.py --variant q --output_dir dit4sr-q-diffusers \
        --push_to_hub your-name/dit4sr-q-diffusers

Afterwards `StableDiffusion3SRPipeline.from_pretrained("dit4sr-q-diffusers")` loads everything from one place. The
saved transformer config records `lr_key_source` (`"noise"` for q and f, `"lr"` for r1), which the released configs
lack, so the converted folder loads with the right attention under any name.
`stabilityai/stable-diffusion-3.5-medium` is gated: accept its license on the Hub and `hf auth login` first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from diffusers_dit4sr import StableDiffusion3SRPipeline
from diffusers_dit4sr.errors import one_line
from diffusers_dit4sr.hub import describe_hub_error, make_model_card, push_pipeline_to_hub
from diffusers_dit4sr.pipelines.pipeline_stable_diffusion_3_sr import (
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
    RELEASED_VARIANTS,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert a released DiT4SR model into a complete Diffusers StableDiffusion3SRPipeline folder."
    )
    parser.add_argument(
        "--sd3_model",
        default=RELEASED_SD3_MODEL,
        help="Hub id or folder of the SD3.5 pipeline providing the VAE, text encoders and scheduler "
        "(default: %(default)s, gated).",
    )
    parser.add_argument(
        "--dit4sr_model",
        default=RELEASED_DIT4SR_MODEL,
        help="Hub id or folder holding the released transformers in `dit4sr_q/transformer`, "
        "`dit4sr_f/transformer` and `dit4sr_r1/transformer` (default: %(default)s).",
    )
    parser.add_argument(
        "--variant",
        choices=RELEASED_VARIANTS,
        default="q",
        help="Released transformer: `q` favours perceptual quality (the paper's results), `f` fidelity, `r1` is the "
        "authors' revision with the corrected LR attention keys (default: %(default)s).",
    )
    parser.add_argument("--output_dir", required=True, help="Where to write the pipeline; must be new or empty.")
    parser.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="bf16",
        help="Weight dtype on disk (default: %(default)s, half the size of fp32; the models were trained in "
        "mixed precision).",
    )
    parser.add_argument(
        "--push_to_hub",
        metavar="REPO_ID",
        help="Also upload the pipeline with its model card to this Hub repository (namespace/name).",
    )
    parser.add_argument(
        "--local_files_only", action="store_true", help="Only use local folders and the Hub cache; no downloads."
    )
    args = parser.parse_args(argv)
    if args.push_to_hub is not None and args.push_to_hub.count("/") != 1:
        # The model card's examples load this id: a bare name would not resolve for other users.
        parser.error(f"--push_to_hub needs NAMESPACE/NAME, got {args.push_to_hub!r}.")
    return args


def check_source(option: str, source: str, required_file: str) -> str | None:
    """An error line when `source` is neither a folder holding `required_file` nor a Hub repository id, else None.

    Diffusers reports a missing local folder as a connection problem; this says what is actually wrong.
    """
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, required_file)):
            return f"error: {option} folder {source!r} has no {required_file}."
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return f"error: {option} {source!r} is neither an existing folder nor a Hub repository id."
    return None


def check_output_dir(output_dir: Path) -> str | None:
    """An error line when `output_dir` already has files: stale components from another run would mix in."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        return f"error: --output_dir {str(output_dir)!r} exists and is not an empty folder."
    return None


def load_error_message(error: Exception, repos: str) -> str:
    """One line describing a failed load of `repos`, with the way out when the cause is the Hub (a gated or private
    model, no network, offline mode)."""
    return f"error: could not load the models: {describe_hub_error(error, repos) or one_line(error)}."


def state_dict_mismatches(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that are missing, extra, or not bit-identical (dtype included)."""
    names = sorted(set(expected) ^ set(actual))
    for name in sorted(set(expected) & set(actual)):
        a, b = expected[name], actual[name]
        if a.dtype != b.dtype or not torch.equal(a, b.to(a.device)):
            names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    output_dir = Path(args.output_dir)

    error = (
        check_source("--sd3_model", args.sd3_model, "model_index.json")
        or check_source("--dit4sr_model", args.dit4sr_model, f"dit4sr_{args.variant}/transformer/config.json")
        or check_output_dir(output_dir)
    )
    if error:
        print(error, file=sys.stderr)
        return 1

    print(f"Composing DiT4SR-{args.variant} from {args.dit4sr_model} and {args.sd3_model} ({args.dtype}) ...")
    try:
        pipeline = StableDiffusion3SRPipeline.from_released(
            args.variant,
            sd3_model=args.sd3_model,
            dit4sr_model=args.dit4sr_model,
            dtype=dtype,
            local_files_only=args.local_files_only,
        )
    except (OSError, ValueError) as error:
        print(load_error_message(error, f"{args.dit4sr_model} or {args.sd3_model}"), file=sys.stderr)
        return 1

    model_card = make_model_card(args.push_to_hub or str(output_dir), dit4sr_variant=args.variant)
    pipeline.save_pretrained(output_dir, safe_serialization=True)
    model_card.save(output_dir / "README.md")
    print(f"Saved the pipeline to {output_dir}.")

    # Keep only the transformer weights to compare, so that two whole pipelines never sit in memory at once.
    expected = pipeline.transformer.state_dict()
    del pipeline
    converted = StableDiffusion3SRPipeline.from_pretrained(output_dir, dtype=dtype)
    mismatches = state_dict_mismatches(expected, converted.transformer.state_dict())
    if mismatches:
        print(
            f"error: the saved transformer differs from the released one in {len(mismatches)} tensors "
            f"(first: {mismatches[0]}).",
            file=sys.stderr,
        )
        return 1
    print(f"Verified: {output_dir} loads with StableDiffusion3SRPipeline and holds the released transformer weights.")

    if args.push_to_hub:
        try:
            commit = push_pipeline_to_hub(
                converted,
                args.push_to_hub,
                commit_message=f"Add DiT4SR-{args.variant} ({args.dtype}) converted from {args.dit4sr_model}",
                model_card=model_card,
            )
        except OSError as error:
            print(f"error: could not push to {args.push_to_hub}: {one_line(error)}", file=sys.stderr)
            return 1
        print(f"Pushed to https://huggingface.co/{args.push_to_hub}: {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
