# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
