# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""DiT4SRTransformer2DModel with Diffusers' attention backends, caching hooks, group offloading, compilation,
gradient checkpointing and PEFT.

Tests that mirror one of Diffusers' generic model tests (`tests/models/testing_utils/` in the Diffusers repository)
carry its name.
"""

import glob
import inspect

import pytest
import torch
from diffusers import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.hooks.faster_cache import _FASTER_CACHE_BLOCK_HOOK, _FASTER_CACHE_DENOISER_HOOK
from diffusers.hooks.group_offloading import ModuleGroup
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry, attention_backend
from peft import LoraConfig
from torch._dynamo.testing import CompileCounter

from diffusers_dit4sr import DiT4SRTransformer2DModel
from diffusers_dit4sr.models import (
    DiT4SRAttention,
    DiT4SRAttnProcessor,
    DiT4SRDualAttentionTransformerBlock,
    DiT4SRFinalTransformerBlock,
    DiT4SRTransformerBlock,
)

from .utils import (
    TINY_SD30_CONFIG,
    TINY_SD35_ALL_BLOCKS_CONFIG,
    TINY_SD35_CONFIG,
    make_inputs,
    randomize_,
    relative_error,
)

BLOCK_CLASSES = (DiT4SRTransformerBlock, DiT4SRDualAttentionTransformerBlock, DiT4SRFinalTransformerBlock)


@pytest.fixture
def model() -> DiT4SRTransformer2DModel:
    return randomize_(DiT4SRTransformer2DModel(**TINY_SD35_CONFIG)).eval()


@torch.no_grad()
def run(model, inputs, **kwargs) -> torch.Tensor:
    return model(**inputs, **kwargs).sample


class CallCounter:
    """Counts calls of a method on a class for the duration of a test, and keeps their positional arguments."""

    def __init__(self, monkeypatch, cls, name):
        self.count = 0
        self.args = []
        original = getattr(cls, name)

        def counted(*args, **kwargs):
            self.count += 1
            self.args.append(args)
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


@pytest.mark.slow
def test_regional_compilation_matches_eager(model, fresh_dynamo):
    """The library's compile path: the repeated blocks compiled with `fullgraph=True` (no graph breaks)."""
    model.fuse_lr_projections()
    inputs = make_inputs()
    eager = run(model, inputs, lr_injection_scale=1.2)
    model.compile_repeated_blocks(fullgraph=True)
    compiled = run(model, inputs, lr_injection_scale=1.2)
    *repeated, final = model.transformer_blocks
    assert all(block._compiled_call_impl is not None for block in repeated)
    assert isinstance(final, DiT4SRFinalTransformerBlock) and final._compiled_call_impl is None
    assert relative_error(compiled, eager) < 1e-5


# --- Attention backends ------------------------------------------------------------------------------------------

# What the CPU runs: SDPA's math and flash kernels (the flash one takes bf16/fp16 only, as Diffusers requires) and
# flex attention (unfused without torch.compile). `_native_cudnn`, `_native_efficient` and the kernel packages
# (flash-attn, sageattention, xformers) need a CUDA GPU.
CPU_BACKENDS = [
    pytest.param(AttentionBackendName._NATIVE_MATH, torch.float32, 1e-5, id="native_math"),
    pytest.param(AttentionBackendName.FLEX, torch.float32, 1e-5, id="flex"),
    pytest.param(AttentionBackendName._NATIVE_FLASH, torch.bfloat16, 2e-2, id="native_flash-bf16"),
]


def _cast(model, inputs, dtype):
    """The model and its inputs in `dtype`; timesteps stay float32, as pipelines pass them."""
    inputs = {name: value if name == "timestep" else value.to(dtype) for name, value in inputs.items()}
    return torch.nn.Module.to(model, dtype), inputs


@pytest.fixture
def restore_attention_backend():
    active, _ = _AttentionBackendRegistry.get_active_backend()
    yield
    _AttentionBackendRegistry.set_active_backend(active)


@pytest.mark.parametrize("backend, dtype, tolerance", CPU_BACKENDS)
def test_output_close_to_native(model, backend, dtype, tolerance, restore_attention_backend):
    """Each backend against native SDPA in float32 (bf16 backends: within bf16 round-off of it)."""
    inputs = make_inputs()
    with attention_backend(AttentionBackendName.NATIVE):
        native = run(model, inputs, lr_injection_scale=1.2)
    model, inputs = _cast(model, inputs, dtype)
    model.set_attention_backend(backend.value)
    try:
        output = run(model, inputs, lr_injection_scale=1.2)
        # The LR tokens go through the same kernel, and the comparison would see them go wrong.
        other_lr = {**inputs, "lr_hidden_states": inputs["lr_hidden_states"].flip(-1)}
        assert relative_error(run(model, other_lr, lr_injection_scale=1.2).float(), native) > 0.1
    finally:
        model.reset_attention_backend()
    assert all(processor._attention_backend is None for processor in model.attn_processors.values())
    assert output.dtype == dtype
    assert relative_error(output.float(), native) < tolerance


@pytest.mark.parametrize("backend, dtype, tolerance", CPU_BACKENDS)
def test_set_attention_backend_matches_context_manager(model, backend, dtype, tolerance, restore_attention_backend):
    model, inputs = _cast(model, make_inputs(), dtype)
    with attention_backend(backend):
        context_output = run(model, inputs)
    model.set_attention_backend(backend.value)
    try:
        set_output = run(model, inputs)
    finally:
        model.reset_attention_backend()
    assert torch.equal(set_output, context_output)


# --- Caching hooks -----------------------------------------------------------------------------------------------

NUM_CACHE_STEPS = 6


@pytest.fixture
def cache_model() -> DiT4SRTransformer2DModel:
    return randomize_(DiT4SRTransformer2DModel(**TINY_SD35_ALL_BLOCKS_CONFIG)).eval()


def guided_step_inputs(step: int) -> dict[str, torch.Tensor]:
    """Row 0 unconditional, row 1 conditional; the inputs drift a little per "denoising step"."""
    inputs = make_inputs(batch_size=2, config=TINY_SD35_ALL_BLOCKS_CONFIG)
    inputs["hidden_states"] = inputs["hidden_states"] + 2e-4 * step
    inputs["timestep"] = inputs["timestep"] - 0.05 * step
    return inputs


def uncached_outputs(model) -> list[torch.Tensor]:
    outputs = [run(model, guided_step_inputs(step)) for step in range(NUM_CACHE_STEPS)]
    # The rows differ far more than the cache tolerances below: a cache that mixed them up would fail.
    assert relative_error(outputs[0][0], outputs[0][1]) > 0.5
    return outputs


def run_cached_steps(model, config, current_timestep, timesteps) -> list[torch.Tensor]:
    model.enable_cache(config)
    outputs = []
    for step, timestep in enumerate(timesteps):
        current_timestep[0] = timestep
        with model.cache_context("cond"):
            outputs.append(run(model, guided_step_inputs(step)))
    model.disable_cache()
    return outputs


def count_attention_modules(model) -> int:
    return sum(isinstance(module, DiT4SRAttention) for module in model.modules())


def test_faster_cache_inference(cache_model, monkeypatch):
    """FasterCache with guidance: skipped attention steps and skipped unconditional halves (`lr_hidden_states` and
    `pooled_projections` are halved with the other inputs), outputs close to the uncached ones."""
    model = cache_model
    expected = uncached_outputs(model)
    current_timestep = [1000]
    config = FasterCacheConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(-1, 901),
        unconditional_batch_skip_range=3,
        current_timestep_callback=lambda: current_timestep[0],
        attention_weight_callback=lambda _: 0.5,
    )
    processor = CallCounter(monkeypatch, DiT4SRAttnProcessor, "__call__")
    # Step 0 lies outside every skip range (the first step computes everything in any case).
    outputs = run_cached_steps(model, config, current_timestep, [1000] + [500] * (NUM_CACHE_STEPS - 1))

    # Batch rows each attention computed, per step: the unconditional half is skipped on steps 1, 2, 4, 5 (not on
    # multiples of 3), attention on odd steps, except where the full batch runs (step 3): there it must compute.
    num_attention = count_attention_modules(model)
    rows = [call[2].shape[1] for call in processor.args]  # the processor sees the (2, B, N, D) stream stack
    assert rows == [2] * num_attention + [1] * num_attention + [2] * num_attention + [1] * num_attention
    for step in (0, 3):  # everything computed
        assert torch.equal(outputs[step], expected[step])
    for step in (1, 2, 4, 5):  # approximated
        assert 0 < relative_error(outputs[step], expected[step]) < 0.15
    assert torch.equal(run(model, guided_step_inputs(4)), expected[4])


def test_faster_cache_hooks_registered(cache_model):
    model = cache_model
    config = FasterCacheConfig(current_timestep_callback=lambda: 500)
    default_identifiers = config._unconditional_conditional_input_kwargs_identifiers
    model.enable_cache(config)
    assert model._diffusers_hook.get_hook(_FASTER_CACHE_DENOISER_HOOK) is not None
    hooked = [
        name
        for name, module in model.named_modules()
        if hasattr(module, "_diffusers_hook") and module._diffusers_hook.get_hook(_FASTER_CACHE_BLOCK_HOOK)
    ]
    assert len(hooked) == count_attention_modules(model) and all(name.endswith(("attn", "attn2")) for name in hooked)
    # Every forward argument that carries the batch is split; the config passed in is left as it was.
    denoiser_hook = model._diffusers_hook.get_hook(_FASTER_CACHE_DENOISER_HOOK)
    assert set(DiT4SRTransformer2DModel._batch_input_kwargs) <= set(denoiser_hook.uncond_cond_input_kwargs_identifiers)
    assert denoiser_hook.tensor_format == "BCHW"
    assert config._unconditional_conditional_input_kwargs_identifiers == default_identifiers
    assert config.tensor_format == "BCFHW"
    model.disable_cache()
    assert not any(
        module._diffusers_hook.get_hook(name)
        for module in model.modules()
        if hasattr(module, "_diffusers_hook")
        for name in (_FASTER_CACHE_DENOISER_HOOK, _FASTER_CACHE_BLOCK_HOOK)
    )


def test_faster_cache_requires_timestep_callback(cache_model):
    with pytest.raises(ValueError, match="current_timestep_callback"):
        cache_model.enable_cache(FasterCacheConfig())
    assert not cache_model.is_cache_enabled


def test_batch_input_kwargs_are_the_tensor_arguments_of_forward():
    """`_batch_input_kwargs` must list every tensor argument of `forward` (all carry the batch), or FasterCache would
    leave one at full batch when it halves the others."""
    parameters = inspect.signature(DiT4SRTransformer2DModel.forward).parameters.values()
    tensor_arguments = {parameter.name for parameter in parameters if parameter.annotation == "torch.Tensor"}
    assert set(DiT4SRTransformer2DModel._batch_input_kwargs) == tensor_arguments
    assert all(value.shape[0] == 2 for value in guided_step_inputs(0).values())


@pytest.mark.slow
def test_pab_cache_inference(cache_model, monkeypatch):
    """PyramidAttentionBroadcast: every attention (joint and `attn2`) reuses its output on every other step."""
    model = cache_model
    expected = uncached_outputs(model)
    current_timestep = [500]
    config = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=lambda: current_timestep[0],
    )
    processor = CallCounter(monkeypatch, DiT4SRAttnProcessor, "__call__")
    # Step 4 lies outside the timestep range, so it computes; its odd neighbour 5 broadcasts again.
    outputs = run_cached_steps(model, config, current_timestep, [500, 500, 500, 500, 900, 500])
    computed_steps = (0, 2, 4)
    assert processor.count == len(computed_steps) * count_attention_modules(model)
    for step in range(NUM_CACHE_STEPS):
        error = relative_error(outputs[step], expected[step])
        assert error == 0 if step in computed_steps else 0 < error < 0.05, (step, error)
    assert torch.equal(run(model, guided_step_inputs(5)), expected[5])


def test_mag_cache_inference(cache_model, monkeypatch):
    """MagCache: with neutral ratios and one skip allowed in a row, every other step reuses the blocks' residual."""
    model = cache_model
    expected = uncached_outputs(model)
    config = MagCacheConfig(
        num_inference_steps=NUM_CACHE_STEPS,
        retention_ratio=0.0,
        threshold=100.0,
        max_skip_steps=1,
        mag_ratios=[1.0] * NUM_CACHE_STEPS,
    )
    counters = [CallCounter(monkeypatch, cls, "forward") for cls in BLOCK_CLASSES]
    outputs = run_cached_steps(model, config, [None], [None] * NUM_CACHE_STEPS)
    computed_steps = (0, 2, 4)
    num_layers = TINY_SD35_ALL_BLOCKS_CONFIG["num_layers"]
    # The subclasses' `forward` calls DiT4SRTransformerBlock's: that counter sees every block call.
    assert [counter.count for counter in counters] == [len(computed_steps) * num_layers, 3 * 2, 3 * 1]
    for step in range(NUM_CACHE_STEPS):
        error = relative_error(outputs[step], expected[step])
        assert error == 0 if step in computed_steps else 0 < error < 0.05, (step, error)
    assert torch.equal(run(model, guided_step_inputs(1)), expected[1])


def test_block_classes_registered_for_hooks_and_device_maps(cache_model):
    model = cache_model
    kinds = [type(block) for block in model.transformer_blocks]
    assert kinds == [
        DiT4SRDualAttentionTransformerBlock,
        DiT4SRDualAttentionTransformerBlock,
        DiT4SRTransformerBlock,
        DiT4SRFinalTransformerBlock,
    ]
    for cls in BLOCK_CLASSES:
        metadata = TransformerBlockRegistry.get(cls)
        assert (metadata.return_hidden_states_index, metadata.return_encoder_hidden_states_index) == (1, 0)
        assert cls.__name__ in model._no_split_modules
    assert model._repeated_blocks == ["DiT4SRTransformerBlock", "DiT4SRDualAttentionTransformerBlock"]


# --- Group offloading --------------------------------------------------------------------------------------------

GROUP_OFFLOAD_TYPES = [
    pytest.param({"offload_type": "block_level", "num_blocks_per_group": 1}, id="block_level"),
    pytest.param({"offload_type": "leaf_level"}, id="leaf_level"),
]


def test_group_offloading(cache_model, monkeypatch):
    """CPU-to-CPU offloading (the CPU has no other device): the hooks onload every group and the output is exact."""
    inputs = make_inputs(config=TINY_SD35_ALL_BLOCKS_CONFIG)
    expected = run(cache_model, inputs)
    state = cache_model.state_dict()
    onloads = CallCounter(monkeypatch, ModuleGroup, "onload_")
    for options in (
        {"offload_type": "block_level", "num_blocks_per_group": 1},
        {"offload_type": "block_level", "num_blocks_per_group": 1, "non_blocking": True},
        {"offload_type": "block_level", "num_blocks_per_group": 3},
        {"offload_type": "leaf_level"},
    ):
        model = DiT4SRTransformer2DModel(**TINY_SD35_ALL_BLOCKS_CONFIG).eval()
        model.load_state_dict(state)
        model.enable_group_offload("cpu", offload_device="cpu", **options)
        assert all(
            module._diffusers_hook.get_hook("group_offloading") is not None
            for module in model.modules()
            if hasattr(module, "_diffusers_hook")
        )
        onloads.count = 0
        assert torch.equal(run(model, inputs), expected), options
        if options["offload_type"] == "block_level":
            # One group per `num_blocks_per_group` blocks, plus the embeddings and output layers.
            num_blocks = TINY_SD35_ALL_BLOCKS_CONFIG["num_layers"]
            assert onloads.count == -(-num_blocks // options["num_blocks_per_group"]) + 1, options
        else:
            assert onloads.count > sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@pytest.mark.parametrize("options", GROUP_OFFLOAD_TYPES)
def test_group_offloading_with_disk(cache_model, options, tmp_path):
    """Offloaded to disk, the weights in memory are placeholders: overwritten with NaN here, so any weight or buffer
    the hooks do not bring back before it is used would show in the output."""
    inputs = make_inputs(config=TINY_SD35_ALL_BLOCKS_CONFIG)
    expected = run(cache_model, inputs)
    cache_model.enable_group_offload("cpu", offload_to_disk_path=str(tmp_path), **options)
    files = glob.glob(str(tmp_path / "*.safetensors"))
    if options["offload_type"] == "block_level":
        assert len(files) == TINY_SD35_ALL_BLOCKS_CONFIG["num_layers"] + 1
    with torch.no_grad():
        for tensor in [*cache_model.parameters(), *cache_model.buffers()]:
            tensor.data.fill_(float("nan"))
    assert torch.equal(run(cache_model, inputs), expected)
    assert torch.equal(run(cache_model, inputs), expected)


@pytest.mark.parametrize("options", GROUP_OFFLOAD_TYPES)
@pytest.mark.parametrize("storage_dtype", [torch.float16, torch.bfloat16])
def test_group_offloading_with_layerwise_casting(cache_model, options, storage_dtype):
    inputs = make_inputs(config=TINY_SD35_ALL_BLOCKS_CONFIG)
    expected = run(cache_model, inputs)
    cache_model.enable_group_offload("cpu", **options)
    cache_model.enable_layerwise_casting(storage_dtype=storage_dtype, compute_dtype=torch.float32)
    assert cache_model.transformer_blocks[0].attn.to_q_control.weight.dtype == storage_dtype
    output = run(cache_model, inputs)
    assert output.dtype == torch.float32
    # The storage round-off, no more: fp16 keeps 11 significant bits, bf16 8.
    assert 0 < relative_error(output, expected) < (2e-3 if storage_dtype == torch.float16 else 2e-2)


@pytest.mark.parametrize("options", GROUP_OFFLOAD_TYPES)
def test_group_offloading_with_fused_lr_projections(cache_model, options, tmp_path):
    """Folded LR projections are buffers of the attention modules: fused first, they are offloaded with them."""
    inputs = make_inputs(config=TINY_SD35_ALL_BLOCKS_CONFIG)
    cache_model.fuse_lr_projections()
    expected = run(cache_model, inputs)
    cache_model.enable_group_offload("cpu", offload_to_disk_path=str(tmp_path), **options)
    with torch.no_grad():
        for tensor in [*cache_model.parameters(), *cache_model.buffers()]:
            tensor.data.fill_(float("nan"))
    assert torch.equal(run(cache_model, inputs), expected)
    # Folding after offloading would read the placeholders.
    with pytest.raises(ValueError, match="before `enable_group_offload"):
        cache_model.fuse_lr_projections()


# --- torch.compile -----------------------------------------------------------------------------------------------

COMPILE_CASES = {
    # config, the block classes compiled (one graph each)
    "sd35": (TINY_SD35_ALL_BLOCKS_CONFIG, {DiT4SRDualAttentionTransformerBlock, DiT4SRTransformerBlock}),
    "sd30": (TINY_SD30_CONFIG, {DiT4SRTransformerBlock}),
}


@pytest.fixture
def fresh_dynamo():
    """Dynamo keeps its caches on the blocks' `forward` code objects, shared by every model: start and end clean."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def _compile_and_run_twice(case: str, **compile_options) -> tuple[DiT4SRTransformer2DModel, list, list]:
    config, _ = COMPILE_CASES[case]
    model = randomize_(DiT4SRTransformer2DModel(**config)).eval()
    inputs = [make_inputs(config=config, seed=seed) for seed in (0, 1)]
    eager = [run(model, step_inputs, lr_injection_scale=1.2) for step_inputs in inputs]
    model.compile_repeated_blocks(fullgraph=True, **compile_options)
    # Diffusers' test: no block may need a second graph (a recompilation) in two forwards.
    with torch._dynamo.config.patch(recompile_limit=1):
        compiled = [run(model, step_inputs, lr_injection_scale=1.2) for step_inputs in inputs]
    return model, eager, compiled


def _check_compiled_blocks(model: DiT4SRTransformer2DModel, compiled_classes: set) -> None:
    for block in model.transformer_blocks:
        assert (block._compiled_call_impl is not None) == (type(block) in compiled_classes), type(block)
    # Each class has its own `forward` code object, so each keeps its own one-entry dynamo cache.
    assert len({cls.forward.__code__ for cls in BLOCK_CLASSES}) == len(BLOCK_CLASSES)


@pytest.mark.parametrize("case", list(COMPILE_CASES))
def test_torch_compile_repeated_blocks_one_graph_per_block_class(case, fresh_dynamo):
    """The dynamo part of `test_torch_compile_repeated_blocks`, counted: one graph per repeated block class."""
    counter = CompileCounter()
    model, eager, compiled = _compile_and_run_twice(case, backend=counter)
    compiled_classes = COMPILE_CASES[case][1]
    assert counter.frame_count == len(compiled_classes)
    _check_compiled_blocks(model, compiled_classes)
    for compiled_output, eager_output in zip(compiled, eager, strict=True):
        assert relative_error(compiled_output, eager_output) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("case", list(COMPILE_CASES))
def test_torch_compile_repeated_blocks(case, fresh_dynamo):
    """Diffusers' test with the default (inductor) backend: `compile_repeated_blocks(fullgraph=True)` under
    `recompile_limit=1`. Slow: inductor compiles one C++ graph per repeated block class (about 10-25 s each)."""
    model, eager, compiled = _compile_and_run_twice(case)
    _check_compiled_blocks(model, COMPILE_CASES[case][1])
    for compiled_output, eager_output in zip(compiled, eager, strict=True):
        assert relative_error(compiled_output, eager_output) < 1e-5
