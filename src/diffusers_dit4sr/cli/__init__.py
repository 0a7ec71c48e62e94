# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-upscale`, the command line: `options` (argparse only, without torch), `progress` (tqdm) and `main`
(`main.main` is the command; `python -m diffusers_dit4sr.cli` runs it too)."""
