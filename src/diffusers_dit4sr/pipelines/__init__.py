from .pipeline_stable_diffusion_3_sr import (
    DEFAULT_ADDED_PROMPT,
    DEFAULT_MAX_SEQUENCE_LENGTH,
    DEFAULT_NEGATIVE_PROMPT,
    StableDiffusion3SRPipeline,
    StableDiffusion3SRPipelineOutput,
)

__all__ = [
    "DEFAULT_ADDED_PROMPT",
    "DEFAULT_MAX_SEQUENCE_LENGTH",
    "DEFAULT_NEGATIVE_PROMPT",
    "StableDiffusion3SRPipeline",
    "StableDiffusion3SRPipelineOutput",
]
