# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Writes a tiny, randomly initialized `StableDiffusion3SRPipeline` folder, fully offline.

A few megabytes instead of the many gigabytes of the released models: for smoke tests, and for trying the library and the
`dit4sr-upscale` command without downloading anything. Its images are noise, but shapes and control flow are real.

    python scripts/make_tiny_pipeline.py tiny-dit4sr
    dit4sr-upscale photo.png --model tiny-dit4sr

`--with-captioner DIR` also writes a tiny random LLaVA-style captioner, for `--caption-model` (its captions are random
text too; keep them short):

    python scripts/make_tiny_pipeline.py tiny-dit4sr --with-captioner tiny-captioner
    dit4sr-upscale photo.png --model tiny-dit4sr --caption-model tiny-captioner --caption-max-new-tokens 16
"""

from __future__ import annotations

import argparse
import sys

from diffusers_dit4sr.tiny import make_tiny_pipeline, save_tiny_captioner


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write a tiny random StableDiffusion3SRPipeline folder (offline).")
    parser.add_argument("output_dir", help="The folder to write the pipeline to.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default: %(default)s).")
    parser.add_argument("--no-t5", action="store_true", help="Leave out the optional T5 text encoder and tokenizer.")
    parser.add_argument(
        "--with-captioner",
        metavar="DIR",
        help="Also write a tiny random LLaVA-style captioner (for `dit4sr-upscale --caption-model DIR`) to this folder.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pipeline = make_tiny_pipeline(seed=args.seed, with_t5=not args.no_t5)
    pipeline.save_pretrained(args.output_dir, safe_serialization=True)
    print(f"Wrote a tiny random StableDiffusion3SRPipeline to {args.output_dir}")
    if args.with_captioner is None:
        print(f"Try it: dit4sr-upscale photo.png --model {args.output_dir}")
    else:
        save_tiny_captioner(args.with_captioner, seed=args.seed)
        print(f"Wrote a tiny random LLaVA-style captioner to {args.with_captioner}")
        print(
            f"Try it: dit4sr-upscale photo.png --model {args.output_dir} --caption-model {args.with_captioner} "
            "--caption-max-new-tokens 16"
        )
    print(f'    or: StableDiffusion3SRPipeline.from_pretrained("{args.output_dir}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
