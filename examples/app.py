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

The page bounds what visitors can send (uploads up to 50 MB, photos up to 2048 px a side, 20 waiting requests;
`build_demo`'s arguments change them); a Space's visibility settings say who can open it. See docs/demo.md.
"""

import os

from diffusers_dit4sr import runtime
from diffusers_dit4sr.demo import build_demo

device = runtime.resolve_device("auto")
hub = runtime.check_hub_access(os.environ.get("DIT4SR_MODEL") or None)

# Loaded and prepared as `dit4sr-demo` does; huggingface_hub reads the HF_TOKEN secret itself. A model that cannot be
# loaded stops the Space with a `LoadError`, one line that says why.
pipe = runtime.open_pipeline(
    os.environ.get("DIT4SR_MODEL") or None, variant=os.environ.get("DIT4SR_VARIANT"), device=device, hub=hub
)
captioner = None
if os.environ.get("DIT4SR_CAPTION_MODEL"):
    captioner = runtime.open_captioner(os.environ["DIT4SR_CAPTION_MODEL"], device=device, hub=hub)

demo = build_demo(pipe, captioner)

if __name__ == "__main__":
    demo.launch()
