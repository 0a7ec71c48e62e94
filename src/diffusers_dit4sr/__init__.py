"""DiT4SR real-world image super-resolution as a Diffusers library.

Modules are imported eagerly: `model_index.json` names our classes by module path, and Diffusers finds them in
`sys.modules` without importing them itself.
"""

from .captioning import Captioner, remove_focus_sentences
from .models import DiT4SRTransformer2DModel
from .pipelines import StableDiffusion3SRPipeline, StableDiffusion3SRPipelineOutput

__version__ = "0.1.0.dev0"

__all__ = [
    "Captioner",
    "DiT4SRTransformer2DModel",
    "StableDiffusion3SRPipeline",
    "StableDiffusion3SRPipelineOutput",
    "remove_focus_sentences",
]
