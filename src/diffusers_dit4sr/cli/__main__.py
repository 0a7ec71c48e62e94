# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`python -m diffusers_dit4sr.cli`: the `dit4sr-upscale` command."""

from .main import main

raise SystemExit(main())
