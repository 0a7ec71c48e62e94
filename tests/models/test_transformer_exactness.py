"""DiT4SRTransformer2DModel equals the plain-torch oracle (a slow re-statement of the spec) on random weights."""

import pytest
import torch

from diffusers_dit4sr import DiT4SRTransformer2DModel

from .dit4sr_oracle import oracle_forward
from .utils import TINY_SD30_CONFIG, TINY_SD35_CONFIG, make_inputs, randomize_, relative_error

CASES = {
    # name: (config, DiT4SR options, lr_injection_scale)
    "sd35-released-scale1.2": (TINY_SD35_CONFIG, {}, 1.2),
    "sd35-released-scale1.0": (TINY_SD35_CONFIG, {}, 1.0),
    "sd35-paper-keys": (TINY_SD35_CONFIG, {"lr_key_source": "lr"}, 1.2),
    "sd30": (TINY_SD30_CONFIG, {}, 1.2),
    "sd30-paper-keys": (TINY_SD30_CONFIG, {"lr_key_source": "lr"}, 1.0),
    "ablation-A-no-lr-attention": (TINY_SD35_CONFIG, {"lr_attention": False}, 1.0),
    "ablation-B-no-lr-residual": (TINY_SD35_CONFIG, {"lr_residual": False}, 1.0),
    "ablation-C-no-injection": (TINY_SD35_CONFIG, {"lr_injection": "none"}, 1.0),
    "ablation-D-linear-injection": (TINY_SD35_CONFIG, {"lr_injection": "linear"}, 1.2),
}


def random_model(config: dict, options: dict) -> DiT4SRTransformer2DModel:
    model = randomize_(DiT4SRTransformer2DModel(**config, **options))
    # Norm weights near 1 keep the normalized attention logits O(1), so the attention pattern is far from uniform.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rsplit(".", 2)[-2] in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
                param.add_(1.0)
    return model.eval()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch_size, height, width", [(2, 8, 12), (1, 10, 6)])
def test_matches_oracle(case, batch_size, height, width):
    config, options, scale = CASES[case]
    model = random_model(config, options)
    inputs = make_inputs(batch_size, height, width, seed=batch_size, config=config)
    with torch.no_grad():
        output = model(**inputs, lr_injection_scale=scale).sample
    expected = oracle_forward(
        model.state_dict(),
        {**dict(model.config), **options},
        **{name: value.double() for name, value in inputs.items()},
        lr_injection_scale=scale,
    )
    assert output.shape == (batch_size, config["out_channels"], height, width)
    assert relative_error(output, expected) < 1e-5


def test_oracle_comparison_can_fail():
    """The tolerance is far below the effect of the released key quirk, so the comparison above can fail."""
    model = random_model(TINY_SD35_CONFIG, {})
    inputs = make_inputs()
    with torch.no_grad():
        output = model(**inputs, lr_injection_scale=1.2).sample
    paper_keys = oracle_forward(
        model.state_dict(),
        {**dict(model.config), "lr_key_source": "lr"},
        **{name: value.double() for name, value in inputs.items()},
        lr_injection_scale=1.2,
    )
    assert relative_error(output, paper_keys) > 1e-3
