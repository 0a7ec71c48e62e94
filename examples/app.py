# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The DiT4SR demo as a Hugging Face Space (Gradio SDK): copy this file to the Space as `app.py`.

The Space needs a GPU, a `requirements.txt` that installs this library with its `demo` extra, and, for the released
weights, an `HF_TOKEN` secret of an account that accepted the license of stabilityai/stable-diffusion-3.5-medium.
Environment variables (the Space's settings) choose what it serves:

    DIT4SR_MODEL          a pipeline folder or Hub id written by `save_pretrained` (default: the released weights)
    DIT4SR_VARIANT        q, f or r1, the released model without DIT4SR_MODEL (default: q)
    DIT4SR_CAPTION_MODEL  a vision-language model that fills the caption box, e.g. llava-hf/llava-1.5-13b-hf

Locally, e.g. offline with the tiny random pipeline:

    python scripts/make_tiny_pipeline.py tiny-pipeline
    DIT4SR_MODEL=tiny-pipeline python examples/app.py

See docs/demo.md.
"""

import os

import torch

from diffusers_dit4sr import Captioner, StableDiffusion3SRPipeline
from diffusers_dit4sr.demo import build_demo

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
token = os.environ.get("HF_TOKEN")

if os.environ.get("DIT4SR_MODEL"):
    pipe = StableDiffusion3SRPipeline.from_pretrained(os.environ["DIT4SR_MODEL"], dtype=dtype, token=token)
else:
    pipe = StableDiffusion3SRPipeline.from_released(
        variant=os.environ.get("DIT4SR_VARIANT", "q"), dtype=dtype, token=token
    )
pipe.to(device)
pipe.enable_vae_tiling()  # bounds the VAE's memory on large outputs
pipe.set_progress_bar_config(disable=True)  # the page shows the progress

captioner = None
if os.environ.get("DIT4SR_CAPTION_MODEL"):
    captioner = Captioner(os.environ["DIT4SR_CAPTION_MODEL"], device=device, dtype=dtype, token=token)

demo = build_demo(pipe, captioner)

if __name__ == "__main__":
    demo.launch()
