"""DiT4SRTransformer2DModel with Diffusers' attention backends, caching hooks, gradient checkpointing and PEFT."""

import pytest
import torch
from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig
from diffusers.models.attention_dispatch import attention_backend
from peft import LoraConfig

from diffusers_dit4sr import DiT4SRTransformer2DModel
from diffusers_dit4sr.models import DiT4SRAttnProcessor, DiT4SRTransformerBlock

from .utils import TINY_SD35_CONFIG, make_inputs, randomize_, relative_error


@pytest.fixture
def model() -> DiT4SRTransformer2DModel:
    return randomize_(DiT4SRTransformer2DModel(**TINY_SD35_CONFIG)).eval()


@torch.no_grad()
def run(model, inputs, **kwargs) -> torch.Tensor:
    return model(**inputs, **kwargs).sample


class CallCounter:
    """Counts calls of a method on a class for the duration of a test."""

    def __init__(self, monkeypatch, cls, name):
        self.count = 0
        original = getattr(cls, name)

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, counted)


def test_attention_backends_agree(model):
    inputs = make_inputs()
    native = run(model, inputs)
    with attention_backend("_native_math"):
        math_context = run(model, inputs)
    model.set_attention_backend("_native_math")
    assert all(processor._attention_backend.value == "_native_math" for processor in model.attn_processors.values())
    math_model = run(model, inputs)
    assert relative_error(math_context, native) < 1e-5
    assert torch.equal(math_model, math_context)


def test_attention_processors_are_dit4sr(model):
    processors = model.attn_processors
    # One joint attention per block plus `attn2` in the dual-attention blocks.
    assert len(processors) == TINY_SD35_CONFIG["num_layers"] + len(TINY_SD35_CONFIG["dual_attention_layers"])
    assert all(isinstance(processor, DiT4SRAttnProcessor) for processor in processors.values())


def test_first_block_cache_skips_blocks(model, monkeypatch):
    inputs = make_inputs()
    expected = run(model, inputs)
    counter = CallCounter(monkeypatch, DiT4SRTransformerBlock, "forward")
    model.enable_cache(FirstBlockCacheConfig(threshold=10.0))
    outputs = []
    for step in range(3):
        with model.cache_context("cond"):
            outputs.append(run(model, {**inputs, "hidden_states": inputs["hidden_states"] + 1e-3 * step}))
    model.disable_cache()
    num_layers = TINY_SD35_CONFIG["num_layers"]
    # Step 0 computes every block; later steps stop after the first one and reuse the cached residual.
    assert counter.count == num_layers + 2
    assert torch.equal(outputs[0], expected)
    assert not torch.equal(outputs[1], outputs[0])
    assert torch.equal(run(model, inputs), expected)


def test_taylorseer_cache_skips_attention(model, monkeypatch):
    inputs = make_inputs()
    counter = CallCounter(monkeypatch, DiT4SRAttnProcessor, "__call__")
    model.enable_cache(
        TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=1, taylor_factors_dtype=torch.float32)
    )
    for step in range(4):
        with model.cache_context("cond"):
            output = run(model, {**inputs, "timestep": inputs["timestep"] - 10 * step})
        assert torch.isfinite(output).all()
    model.disable_cache()
    num_layers, num_dual = TINY_SD35_CONFIG["num_layers"], len(TINY_SD35_CONFIG["dual_attention_layers"])
    # Steps 0 and 1 compute every joint attention (`attn`); steps 2 and 3 predict them. `attn2` always runs.
    assert counter.count == 2 * num_layers + 4 * num_dual


def test_gradient_checkpointing_gives_same_loss_and_gradients(model):
    model.train()
    inputs = make_inputs()

    def loss_and_gradients():
        model.zero_grad()
        loss = model(**inputs, lr_injection_scale=1.2).sample.pow(2).mean()
        loss.backward()
        return loss.detach(), {
            name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None
        }

    loss, gradients = loss_and_gradients()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    checkpointed_loss, checkpointed_gradients = loss_and_gradients()
    assert torch.equal(loss, checkpointed_loss)
    assert checkpointed_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(checkpointed_gradients[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_lora_on_base_and_control_projections(model):
    inputs = make_inputs()
    expected = run(model, inputs)
    targets = ["to_q", "to_k", "to_v", "to_out.0", "to_q_control", "to_v_control", "to_out_control"]
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=True))
    lora_names = [name for name, _ in model.named_parameters() if "lora_B" in name]
    for target in ("attn.to_q.", "attn.to_q_control.", "attn2.to_out_control.", "attn.to_out.0."):
        assert any(target in name for name in lora_names), target
    # LoRA starts as a no-op (B = 0) ...
    assert relative_error(run(model, inputs), expected) < 1e-6
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    # ... changes the output once trained, and `scale` in `joint_attention_kwargs` scales it.
    assert relative_error(run(model, inputs), expected) > 1e-3
    assert relative_error(run(model, inputs, joint_attention_kwargs={"scale": 0.0}), expected) < 1e-6


def test_regional_compilation_matches_eager(model):
    """The library's compile path: the repeated block compiled with `fullgraph=True` (no graph breaks)."""
    model.fuse_lr_projections()
    inputs = make_inputs()
    eager = run(model, inputs, lr_injection_scale=1.2)
    model.compile_repeated_blocks(fullgraph=True)
    compiled = run(model, inputs, lr_injection_scale=1.2)
    assert all(block._compiled_call_impl is not None for block in model.transformer_blocks)
    assert relative_error(compiled, eager) < 1e-5
