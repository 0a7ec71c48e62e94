# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""examples/train_dit4sr.py on CPU with the tiny pipeline: what trains, resuming, saving, LoRA, data sources."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import T5EncoderModel

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline
from diffusers_dit4sr.tiny import make_tiny_pipeline, make_tiny_transformer
from diffusers_dit4sr.training.checkpoints import CHECKPOINT_MANIFEST, latest_checkpoint

EXAMPLES = Path(__file__).parents[1] / "examples"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train = load_script("train_dit4sr")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny pipeline folder and four 80 x 72 px HR photos with captions."""
    root = tmp_path_factory.mktemp("train")
    make_tiny_pipeline().save_pretrained(root / "tiny")
    rng = np.random.default_rng(0)
    (root / "hr").mkdir()
    for index in range(4):
        pixels = rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(root / "hr" / f"photo{index}.png")
        (root / "hr" / f"photo{index}.txt").write_text(f"photo number {index}")
    return root


def arguments(workspace: Path, output: str, *extra: str) -> list[str]:
    args = [
        "--pretrained_model_name_or_path",
        str(workspace / "tiny"),
        "--transformer_model_name_or_path",
        str(workspace / "tiny"),
        "--transformer_subfolder",
        "transformer",
        "--resolution",
        "64",
        "--train_batch_size",
        "2",
        "--lr_warmup_steps",
        "0",
        "--learning_rate",
        "1e-3",
        "--report_to",
        "none",
        "--output_dir",
        str(workspace / output),
        *extra,
    ]
    if "--prepared_data_dir" not in extra and "--dataset_name" not in extra:
        args += ["--train_data_dir", str(workspace / "hr")]
    return args


def run(workspace: Path, output: str, *extra: str) -> dict:
    return train.main(arguments(workspace, output, *extra))


def transformer_state(path: Path) -> dict[str, torch.Tensor]:
    return DiT4SRTransformer2DModel.from_pretrained(path).state_dict()


def test_released_recipe_trains_only_the_lr_branch(workspace):
    summary = run(workspace, "lr_branch", "--max_train_steps", "3", "--checkpointing_steps", "100")
    assert summary["global_step"] == 3 and np.isfinite(summary["loss"])
    before = transformer_state(workspace / "tiny" / "transformer")
    after = transformer_state(workspace / "lr_branch" / "transformer")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    trained = set(DiT4SRTransformer2DModel.from_pretrained(workspace / "tiny" / "transformer").lr_branch_parameters())
    assert changed and changed <= trained
    # Every LR-branch parameter that takes part in the forward pass moved.
    assert changed == trained


@pytest.mark.parametrize("extra, expected", [((), 1.2), (("--lr_injection_scale", "1.0"), 1.0)])
def test_the_training_forward_injects_as_the_released_code(workspace, monkeypatch, extra, expected):
    """The released model code multiplies the LR injection by 1.2 in training as at inference."""
    scales = []
    forward = DiT4SRTransformer2DModel.forward

    def recording_forward(self, *args, **kwargs):
        if self.training:
            scales.append(kwargs["lr_injection_scale"])
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(DiT4SRTransformer2DModel, "forward", recording_forward)
    run(workspace, f"injection_{expected}", "--max_train_steps", "1", "--checkpointing_steps", "100", *extra)
    assert scales == [expected]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's CPU launch is tested on POSIX")
def test_two_processes_train_the_requested_number_of_steps(workspace):
    # 4 photos in batches of 1: 4 batches an epoch before the split, 2 for each of the 2 processes. Counting the
    # epoch's steps before the split made the run stop after 1 epoch, 2 of the 4 steps.
    # ACCELERATE_USE_CPU (what `accelerate launch --cpu` sets): 2 CPU processes on gloo, not 2 independent runs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    args = arguments(workspace, "two_processes", "--max_train_steps", "4", "--checkpointing_steps", "1")
    args[args.index("--train_batch_size") + 1] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    completed = subprocess.run(
        [*command, str(EXAMPLES / "train_dit4sr.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    checkpoints = sorted(path.name for path in (workspace / "two_processes").glob("checkpoint-*"))
    assert checkpoints[-1] == "checkpoint-4"
    # Every process wrote its part (its random state) before the checkpoint was made whole.
    latest = latest_checkpoint(workspace / "two_processes")
    assert latest.path.name == "checkpoint-4" and latest.skipped == []
    files = json.loads((latest.path / CHECKPOINT_MANIFEST).read_text())["files"]
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= set(files)


def test_resume_continues_to_the_same_parameters(workspace):
    # Two batches per epoch: resuming after step 1 continues mid-epoch (the next batch), then crosses an epoch.
    run(workspace, "straight", "--max_train_steps", "3", "--checkpointing_steps", "1")
    run(workspace, "resumed", "--max_train_steps", "1", "--checkpointing_steps", "1")
    assert (workspace / "resumed" / "checkpoint-1").is_dir()
    summary = run(
        workspace,
        "resumed",
        "--max_train_steps",
        "3",
        "--checkpointing_steps",
        "1",
        "--resume_from_checkpoint",
        "latest",
    )
    assert summary["global_step"] == 3
    straight = transformer_state(workspace / "straight" / "transformer")
    resumed = transformer_state(workspace / "resumed" / "transformer")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    initial = transformer_state(workspace / "tiny" / "transformer")
    assert any(not torch.equal(initial[name], tensor) for name, tensor in straight.items())


KILLED_AT_THE_SECOND_SAVE = """
import importlib.util, os, signal, sys
from accelerate import Accelerator

spec = importlib.util.spec_from_file_location("train_dit4sr", sys.argv[1])
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
save_state, calls = Accelerator.save_state, []

def save_state_killed_at_the_second_save(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # the start of the checkpoint-2 save
        os.kill(os.getpid(), signal.SIGKILL)
    return save_state(self, *args, **kwargs)

Accelerator.save_state = save_state_killed_at_the_second_save
train.main(sys.argv[2:])
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_run_killed_while_saving_with_a_limit_of_one_resumes_from_latest(workspace, tmp_path, caplog):
    # Killed at the start of a save with --checkpoints_total_limit 1, the script used to leave only an empty
    # checkpoint-2 (checkpoint-1 already deleted), and `latest` failed on it: every step trained so far was lost.
    options = ("--max_train_steps", "3", "--checkpointing_steps", "1", "--checkpoints_total_limit", "1")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_AT_THE_SECOND_SAVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)
    command = [sys.executable, str(script), str(EXAMPLES / "train_dit4sr.py")]
    completed = subprocess.run(
        [*command, *arguments(workspace, "killed", *options)], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == -9, completed.stderr[-3000:]
    left = sorted(path.name for path in (workspace / "killed").glob("checkpoint-*"))
    assert left == ["checkpoint-1", "checkpoint-2.incomplete"]  # the last whole checkpoint, and the interrupted save

    with caplog.at_level("INFO"):
        summary = run(workspace, "killed", *options, "--resume_from_checkpoint", "latest")
    assert summary["global_step"] == 3
    assert f"resuming from {workspace / 'killed' / 'checkpoint-1'}" in caplog.text
    assert sorted(path.name for path in (workspace / "killed").iterdir() if "checkpoint" in path.name) == [
        "checkpoint-3"
    ]
    run(workspace, "unkilled", *options)
    resumed, straight = (transformer_state(workspace / name / "transformer") for name in ("killed", "unkilled"))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_resume_latest_names_the_checkpoint_it_takes_and_what_it_passed_over(workspace, caplog):
    run(workspace, "broken_latest", "--max_train_steps", "2", "--checkpointing_steps", "1")
    output = workspace / "broken_latest"
    weights = output / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short after the save, e.g. by a full disk elsewhere
    (output / "checkpoint-3").mkdir()  # an older script's save, killed at its start

    with caplog.at_level("INFO"):
        summary = run(workspace, "broken_latest", "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    assert summary["global_step"] == 2
    assert f"skipping {output / 'checkpoint-3'}: it has no {CHECKPOINT_MANIFEST}" in caplog.text
    assert f"skipping {output / 'checkpoint-2'}: model.safetensors is 100 bytes" in caplog.text
    assert f"resuming from {output / 'checkpoint-1'}, the newest whole one (2 newer not)" in caplog.text

    with pytest.raises(ValueError, match=r"checkpoint-2: not a whole checkpoint, model.safetensors is 100 bytes"):
        run(workspace, "broken_latest", "--resume_from_checkpoint", str(output / "checkpoint-2"))


def test_the_final_weights_replace_the_previous_ones_whole(workspace, monkeypatch):
    run(workspace, "final", "--max_train_steps", "1")
    transformer = workspace / "final" / "transformer"
    before = {path.name: path.read_bytes() for path in transformer.iterdir()}

    def crash(self, *args, **kwargs):
        (Path(args[0]) / "config.json").write_text("{ half")
        raise OSError("No space left on device")

    monkeypatch.setattr(DiT4SRTransformer2DModel, "save_pretrained", crash)
    with pytest.raises(OSError, match="No space left"):
        run(workspace, "final", "--max_train_steps", "1")
    assert {path.name: path.read_bytes() for path in transformer.iterdir()} == before
    assert not list((workspace / "final").glob("*.incomplete"))


def test_checkpoints_total_limit_and_validation_images(workspace):
    run(
        workspace,
        "limited",
        "--max_train_steps",
        "3",
        "--checkpointing_steps",
        "1",
        "--checkpoints_total_limit",
        "2",
        "--validation_image",
        str(workspace / "hr" / "photo0.png"),
        "--validation_prompt",
        "a photo",
        "--validation_steps",
        "3",
        "--validation_inference_steps",
        "1",
    )
    assert sorted(path.name for path in (workspace / "limited").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    (grid_path,) = (workspace / "limited" / "validation").glob("*.png")
    grid = PIL.Image.open(grid_path)
    # LR | SR | HR side by side at the HR size (72 x 80 px, trimmed to a multiple of the scale).
    assert grid.size == (3 * 72, 80)


def test_lora_weights_load_into_the_pipeline(workspace):
    run(workspace, "lora", "--trainable", "lora", "--lora_rank", "4", "--max_train_steps", "2")
    lora_file = workspace / "lora" / "pytorch_lora_weights.safetensors"
    assert lora_file.is_file() and not (workspace / "lora" / "transformer").exists()

    pipe = StableDiffusion3SRPipeline.from_pretrained(workspace / "tiny")
    pipe.set_progress_bar_config(disable=True)
    image = PIL.Image.open(workspace / "hr" / "photo1.png").resize((16, 16))
    options = {"num_inference_steps": 1, "process_size": 64, "tile_size": 64, "tile_overlap": 32, "output_type": "pt"}
    plain = pipe(image=image, generator=torch.Generator().manual_seed(0), **options).images
    pipe.load_lora_weights(workspace / "lora")
    adapted = pipe(image=image, generator=torch.Generator().manual_seed(0), **options).images
    assert not torch.allclose(plain, adapted)


def test_prepared_dataset_and_init_from_sd3(workspace):
    prepare = load_script("prepare_dataset")
    exit_code = prepare.main(
        [
            "--input_dir",
            str(workspace / "hr"),
            "--output_dir",
            str(workspace / "prepared"),
            "--resolution",
            "64",
            "--pretrained_model_name_or_path",
            str(workspace / "tiny"),
            "--cache_latents",
            "--cache_text_embeddings",
            "--device",
            "cpu",
        ]
    )
    assert exit_code == 0
    summary = run(
        workspace,
        "from_sd3",
        "--prepared_data_dir",
        str(workspace / "prepared"),
        "--max_train_steps",
        "2",
        "--init_from_sd3",
        "--lr_key_source",
        "lr",
        "--lr_injection",
        "linear",
    )
    assert summary["global_step"] == 2 and np.isfinite(summary["loss"])
    config = json.loads((workspace / "from_sd3" / "transformer" / "config.json").read_text())
    assert config["lr_key_source"] == "lr" and config["lr_injection"] == "linear"


@pytest.mark.parametrize("lr_key_source, trains_to_k_control", [("noise", False), ("lr", True)])
def test_default_lora_targets_include_to_k_control_only_where_it_is_used(lr_key_source, trains_to_k_control):
    """In the released key mode (q, f) `to_k_control` has no gradient; with the LR keys of r1 it has one."""
    transformer = make_tiny_transformer(lr_key_source=lr_key_source)
    targets = train.default_lora_targets(transformer)
    assert set(train.DEFAULT_LORA_TARGETS) <= set(targets)
    assert ("to_k_control" in targets) == trains_to_k_control


@pytest.mark.parametrize("cached_embeddings", [True, False])
def test_cached_embeddings_need_the_text_encoders_only_before_training(workspace, monkeypatch, cached_embeddings):
    """With cached captions T5 runs for the validation prompts before any transformer call, never during training or
    validation (so it can leave the accelerator); without them it encodes every batch."""
    prepare = load_script("prepare_dataset")
    prepared = workspace / f"prepared-{cached_embeddings}"
    arguments = ["--input_dir", str(workspace / "hr"), "--output_dir", str(prepared), "--resolution", "64"]
    arguments += ["--pretrained_model_name_or_path", str(workspace / "tiny"), "--device", "cpu", "--cache_latents"]
    assert prepare.main(arguments + ["--cache_text_embeddings"] * cached_embeddings) == 0
    events = []
    for cls, name in ((T5EncoderModel, "t5"), (DiT4SRTransformer2DModel, "transformer")):
        original = cls.forward
        monkeypatch.setattr(
            cls, "forward", lambda self, *a, _name=name, _f=original, **k: (events.append(_name), _f(self, *a, **k))[1]
        )
    output = f"prepared-run-{cached_embeddings}"
    run(
        workspace,
        output,
        "--prepared_data_dir",
        str(prepared),
        "--max_train_steps",
        "2",
        "--validation_image",
        str(workspace / "hr" / "photo0.png"),
        "--validation_steps",
        "2",
        "--validation_inference_steps",
        "1",
    )
    assert len(list((workspace / output / "validation").glob("*.png"))) == 1
    first_transformer_call = events.index("transformer")
    if cached_embeddings:
        assert events[:first_transformer_call] == ["t5", "t5"]  # the validation prompt and the negative prompt
        assert "t5" not in events[first_transformer_call:]
    else:
        assert "t5" in events[first_transformer_call:]


def test_validation_prompt_embeddings_match_the_pipelines_own_encoding():
    pipe = make_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    args = train.parse_args(
        ["--train_data_dir", "x", "--validation_image", "a.png", "b.png", "--validation_prompt", "a cat", "a dog"]
    )
    # Training embeddings have 77 T5 tokens, validation emulates the released inference's 256.
    assert (args.max_sequence_length, args.validation_max_sequence_length) == (77, 256)
    embeddings = train.encode_validation_prompts(pipe, args, torch.device("cpu"))
    assert embeddings[0]["prompt_embeds"].shape[1] == 77 + 256
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    options = {"num_inference_steps": 1, "process_size": 64, "output_type": "pt"}
    for prompt, text in zip(args.validation_prompt, embeddings, strict=True):
        expected = pipe(image, prompt=prompt, generator=torch.Generator().manual_seed(0), **options).images
        actual = pipe(image, **text, generator=torch.Generator().manual_seed(0), **options).images
        assert torch.equal(actual, expected)
    assert not torch.equal(embeddings[0]["prompt_embeds"], embeddings[1]["prompt_embeds"])


def test_full_fine_tuning_selects_every_used_parameter():
    transformer = make_tiny_pipeline().transformer
    args = train.parse_args(["--train_data_dir", "x", "--trainable", "full"])
    selected = {id(param) for param in train.select_trainable_parameters(transformer, args)}
    unused = {name for name in transformer.lr_branch_parameters(include_unused=True)} - set(
        transformer.lr_branch_parameters()
    )
    for name, param in transformer.named_parameters():
        assert (id(param) in selected) == (name not in unused), name
        assert param.requires_grad == (name not in unused), name


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "exactly one of --train_data_dir, --prepared_data_dir and --dataset_name"),
        (["--train_data_dir", "a", "--prepared_data_dir", "b"], "exactly one"),
        (["--train_data_dir", "a", "--proportion_empty_prompts", "1.5"], "proportion_empty_prompts"),
        (
            ["--train_data_dir", "a", "--validation_image", "x.png", "y.png", "--validation_prompt", "a", "b", "c"],
            "validation_prompt",
        ),
    ],
)
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        train.parse_args(argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_fewer_photos_than_a_batch_stop_before_any_model_loads(workspace, monkeypatch, capsys, tmp_path):
    # docs/training.md's fine-tuning command on 7 photos with the default batch of 8 used to divide by zero.
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(7):
        PIL.Image.new("RGB", (80, 72), (index, 0, 0)).save(photos / f"photo{index}.png")
    monkeypatch.setattr(train, "load_transformer", lambda args: pytest.fail("loaded a model"))
    argv = ["--pretrained_model_name_or_path", str(workspace / "tiny"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as error:
        train.main([*argv, "--train_data_dir", str(photos), "--report_to", "none"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and err.count("\n") == 1
    assert err == (
        "train_dit4sr.py: error: --train_data_dir holds 7 sample(s), fewer than one batch: --train_batch_size 8 x "
        "1 process(es) = 8; lower --train_batch_size\n"
    )


def test_fp16_on_the_cpu_is_a_usage_error(workspace, monkeypatch, capsys):
    monkeypatch.setattr(train, "load_transformer", lambda args: pytest.fail("loaded a model"))
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # as `accelerate launch --cpu`
    # A fresh accelerate state for this test only: an initialized one refuses another mixed precision.
    monkeypatch.setattr(AcceleratorState, "_shared_state", {})
    with pytest.raises(SystemExit) as error:
        run(workspace, "fp16", "--mixed_precision", "fp16")
    err = capsys.readouterr().err
    assert error.value.code == 2
    assert err == "train_dit4sr.py: error: --mixed_precision fp16 does not run on the CPU; use bf16 or no\n"


def test_push_to_hub_uploads_weights_with_a_model_card(workspace, monkeypatch):
    import huggingface_hub

    uploads = []
    monkeypatch.setattr(
        huggingface_hub, "create_repo", lambda repo_id, **kwargs: type("Repo", (), {"repo_id": repo_id})
    )
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kwargs: uploads.append(kwargs))
    run(workspace, "pushed", "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "you/dit4sr-mine")
    (upload,) = uploads
    assert upload["repo_id"] == "you/dit4sr-mine" and upload["folder_path"] == str(workspace / "pushed")
    assert "checkpoint-*/**" in upload["ignore_patterns"]
    card = (workspace / "pushed" / "README.md").read_text()
    assert 'DiT4SRTransformer2DModel.from_pretrained("you/dit4sr-mine", subfolder="transformer"' in card
    assert "- optimization steps: 1, batch 2 per process" in card and "library_name: diffusers" in card
