# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The commands, the only part of the package that knows argparse, tqdm and exit codes.

`dit4sr-upscale` is `main.main` (`python -m diffusers_dit4sr.cli` runs it too), with `options` (its parser and the
option groups the demo shares; argparse only, without torch) and `progress` (tqdm); `dit4sr-demo` is `demo.main`;
`dit4sr-evaluate` is `evaluate.main`. `messages` turns the library's parameter names in its messages into each
command's options.
"""
