"""`dit4sr-upscale` end to end, in-process, with the real tiny pipeline saved to a folder (offline, CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline
from diffusers_dit4sr.captioning import Captioner
from diffusers_dit4sr.cli import DEFAULT_OUTPUT_DIR, main
from diffusers_dit4sr.tiny import make_tiny_pipeline, save_tiny_captioner

FAST_OPTIONS = [
    "--steps", "1", "--scale", "2", "--device", "cpu", "--dtype", "fp32",
    "--tile-size", "64", "--tile-overlap", "32", "--process-size", "64", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-pipeline")
    make_tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture
def upscale(model_dir):
    """Runs the CLI on the tiny pipeline with fast settings; returns the exit code."""

    def run(*args: object) -> int:
        return main([*map(str, args), "--model", str(model_dir), *FAST_OPTIONS])

    return run


@pytest.fixture
def prompts(monkeypatch) -> list:
    """The `prompt` of every pipeline call, in order (the pipeline still runs)."""
    calls = []
    original_call = StableDiffusion3SRPipeline.__call__

    def spy(self, image, prompt=None, **kwargs):
        calls.append(prompt)
        return original_call(self, image, prompt=prompt, **kwargs)

    monkeypatch.setattr(StableDiffusion3SRPipeline, "__call__", spy)
    return calls


def write_image(path: Path, size: tuple[int, int] = (20, 28), seed: int = 0, **save_options) -> Path:
    """A random RGB image of `size` (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels).save(path, **save_options)
    return path


def image_size(path: Path) -> tuple[int, int]:
    with PIL.Image.open(path) as image:
        return image.size


# --- Inputs and outputs ----------------------------------------------------------------------------------------


def test_file_input_goes_to_the_default_folder_at_the_exact_size(upscale, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "odd.png", size=(23, 17))

    assert upscale("odd.png") == 0

    assert image_size(tmp_path / DEFAULT_OUTPUT_DIR / "odd.png") == (46, 34)
    assert capsys.readouterr().out.strip().endswith("1 upscaled, 0 skipped (exist), 0 failed")


def test_folder_input_takes_the_images_directly_inside_and_leaves_no_temp_files(upscale, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "B.JPG", size=(28, 20), format="JPEG")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "in" / "nested" / "c.png")

    assert upscale(tmp_path / "in", "-o", tmp_path / "out") == 0

    assert sorted(os.listdir(tmp_path / "out")) == ["B.png", "a.png"]  # nothing else: no temp files either
    assert image_size(tmp_path / "out" / "a.png") == (40, 56)
    assert image_size(tmp_path / "out" / "B.png") == (56, 40)


def test_glob_patterns_are_expanded_by_the_program(upscale, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png", seed=1)
    write_image(tmp_path / "in" / "c.jpg", format="JPEG")

    assert upscale(tmp_path / "in" / "*.png", "-o", tmp_path / "out") == 0

    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]


def test_output_file_for_a_single_input_takes_its_format_from_the_extension(upscale, tmp_path):
    source = write_image(tmp_path / "photo.png")

    assert upscale(source, "-o", tmp_path / "result.jpg") == 0

    with PIL.Image.open(tmp_path / "result.jpg") as result:
        assert (result.format, result.size) == ("JPEG", (40, 56))


def test_exif_orientation_is_applied(upscale, tmp_path):
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    source = write_image(tmp_path / "portrait.jpg", size=(20, 28), format="JPEG", exif=exif)

    assert upscale(source, "-o", tmp_path / "out") == 0

    assert image_size(tmp_path / "out" / "portrait.png") == (56, 40)


# --- Existing outputs ------------------------------------------------------------------------------------------


def test_existing_outputs_are_skipped_without_loading_the_model_and_replaced_with_overwrite(upscale, tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    target = tmp_path / "out" / "photo.png"
    target.parent.mkdir()
    target.write_bytes(b"an earlier result")
    os.utime(target, (1_000_000, 1_000_000))
    options = [source, "-o", target.parent, "--steps", "1", "--device", "cpu", "--quiet"]

    # Nothing to do: the model is not even loaded (this folder does not exist).
    assert main([*map(str, options), "--model", str(tmp_path / "no-model")]) == 0
    assert target.read_bytes() == b"an earlier result"
    assert target.stat().st_mtime == 1_000_000
    assert capsys.readouterr().out.strip() == "0 upscaled, 1 skipped (exist), 0 failed"

    assert upscale(source, "-o", target.parent, "--overwrite") == 0
    assert image_size(target) == (40, 56)
    assert capsys.readouterr().out.strip() == "1 upscaled, 0 skipped (exist), 0 failed"


# --- Failures --------------------------------------------------------------------------------------------------


def test_unreadable_and_too_large_inputs_are_reported_and_the_others_written(upscale, tmp_path, capsys):
    write_image(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(np.random.default_rng(0).bytes(300))
    write_image(tmp_path / "in" / "wide.png", size=(8200, 2))  # 16400 px wide at x2: above the pipeline's limit

    assert upscale(tmp_path / "in", "-o", tmp_path / "out") == 1

    captured = capsys.readouterr()
    assert os.listdir(tmp_path / "out") == ["good.png"]
    assert "bad.png" in captured.err and "wide.png" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out.strip() == "1 upscaled, 0 skipped (exist), 2 failed"


def test_a_failed_write_is_reported_and_leaves_no_temp_file(upscale, tmp_path, monkeypatch, capsys):
    source = write_image(tmp_path / "photo.png")

    def failing_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(PIL.Image.Image, "save", failing_save)

    assert upscale(source, "-o", tmp_path / "out") == 1
    assert os.listdir(tmp_path / "out") == []
    assert "No space left on device" in capsys.readouterr().err


def test_a_missing_model_folder_is_one_clear_error(tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    missing = tmp_path / "no-such-pipeline"

    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(missing), "--device", "cpu"]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert str(missing) in err and "save_pretrained" in err


def test_released_weights_failure_explains_the_gated_model(tmp_path, monkeypatch, capsys):
    def from_released(*args, **kwargs):
        raise OSError("stabilityai/stable-diffusion-3.5-medium is a gated repository")

    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_released", from_released)
    source = write_image(tmp_path / "photo.png")

    assert main([str(source), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "license" in err and "hf auth login" in err


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda tmp: [tmp / "in" / "a.png", tmp / "in" / "b.png", "-o", tmp / "out.png"], "names a file"),
        (lambda tmp: [tmp / "empty"], "no images found"),
        (lambda tmp: [tmp / "missing.png"], "no such file"),
        (lambda tmp: [tmp / "in" / "a.png", tmp / "in" / "a.jpg"], "would both be written"),
        (lambda tmp: [tmp / "in", "--variant", "f"], "--variant"),
        (lambda tmp: [tmp / "in", "--cpu-offload", "--device", "cpu"], "--cpu-offload"),
        (lambda tmp: [tmp / "in", "--tile-size", "64", "--tile-overlap", "64"], "--tile-overlap"),
        (lambda tmp: [tmp / "in", "--captions-dir", tmp / "missing"], "--captions-dir"),
        (lambda tmp: [tmp / "in", "--attention-backend", "fastest"], "--attention-backend fastest"),
        (lambda tmp: [tmp / "in", "--caption-model", "m", "--prompt", "a cat"], "combined with --caption-model"),
        (lambda tmp: [tmp / "in", "--caption-prompt", "Describe."], "--caption-prompt sets up --caption-model"),
        (lambda tmp: [tmp / "in", "--caption-batch-size", "2"], "--caption-batch-size sets up --caption-model"),
        (lambda tmp: [tmp / "in", "--caption-model", "m", "--caption-prompt", " "], "--caption-prompt must not"),
        (lambda tmp: [tmp / "in", "--caption-model", "m", "--caption-8bit"], "--caption-8bit runs on CUDA only"),
    ],
)
def test_usage_errors_exit_with_code_2_before_loading(make_args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png")
    write_image(tmp_path / "in" / "a.jpg", format="JPEG")
    (tmp_path / "empty").mkdir()
    args = [*map(str, make_args(tmp_path)), "--model", str(tmp_path / "not-loaded"), "--device", "cpu"]

    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / DEFAULT_OUTPUT_DIR).exists()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--steps", "0", "must be a positive integer, got 0"),
        ("--steps", "many", "must be a positive integer, got 'many'"),
        ("--scale", "x4", "must be a positive number, got 'x4'"),
        ("--tile-overlap", "-1", "must be a non-negative integer, got -1"),
        ("--tile-batch-size", "all", "must be 'auto' or a positive integer, got 'all'"),
        ("--caption-max-new-tokens", "0", "must be a positive integer, got 0"),
        ("--caption-max-new-tokens", "1e3", "must be a positive integer, got '1e3'"),
        ("--caption-batch-size", "two", "must be a positive integer, got 'two'"),
    ],
)
def test_invalid_option_values_are_rejected_by_the_parser(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["photo.png", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {message}" in err
    assert "_positive" not in err and "invalid" not in err  # no internal function names


# --- Speed options ---------------------------------------------------------------------------------------------


def read_pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image, dtype=np.int16)


def test_speed_options_reach_the_transformer_and_keep_the_image(upscale, tmp_path, monkeypatch):
    source = write_image(tmp_path / "a.png")
    assert upscale(source, "-o", tmp_path / "plain.png") == 0

    calls = []

    def spy(name, run_original=True):
        original = getattr(DiT4SRTransformer2DModel, name)

        def record(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return original(self, *args, **kwargs) if run_original else None

        monkeypatch.setattr(DiT4SRTransformer2DModel, name, record)

    spy("set_attention_backend")
    spy("fuse_lr_projections")
    spy("compile_repeated_blocks", run_original=False)  # compiling takes seconds; regional compile is tested apart
    options = ["--attention-backend", "_native_math", "--fuse-lr-projections", "--compile"]
    assert upscale(source, "-o", tmp_path / "fast.png", *options) == 0

    assert calls == [
        ("set_attention_backend", ("_native_math",), {}),
        ("fuse_lr_projections", (), {}),
        ("compile_repeated_blocks", (), {"fullgraph": True}),
    ]
    # Folded projections and another attention kernel change float round-off, not the 8-bit image.
    assert np.abs(read_pixels(tmp_path / "fast.png") - read_pixels(tmp_path / "plain.png")).max() <= 1


def test_an_unusable_attention_backend_is_one_clear_error(upscale, tmp_path, capsys):
    # Diffusers knows `xformers` but the package is not installed: reported once, before any image.
    assert upscale(write_image(tmp_path / "a.png"), "-o", tmp_path / "out", "--attention-backend", "xformers") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot prepare the pipeline" in err and "xformers" in err
    assert not (tmp_path / "out").exists()


# --- Captions and seeds ----------------------------------------------------------------------------------------


def test_captions_dir_gives_each_image_its_caption(upscale, prompts, tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png")
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a red brick house by a lake\n", encoding="utf-8")

    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "--captions-dir", tmp_path / "captions") == 0

    assert prompts == ["a red brick house by a lake", ""]
    assert "b.txt" in capsys.readouterr().err  # the missing caption is a warning, not a failure


def test_prompt_is_used_for_every_image_and_no_caption_by_default(upscale, prompts, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png")

    assert upscale(tmp_path / "in", "-o", tmp_path / "with-prompt", "--prompt", "a cat") == 0
    assert upscale(tmp_path / "in" / "a.png", "-o", tmp_path / "without") == 0

    assert prompts == ["a cat", "a cat", None]


def test_results_depend_on_the_seed_only_not_on_the_other_inputs(upscale, tmp_path):
    write_image(tmp_path / "in" / "a.png", seed=1)
    source = write_image(tmp_path / "in" / "b.png", seed=2)

    assert upscale(tmp_path / "in", "-o", tmp_path / "both") == 0
    assert upscale(source, "-o", tmp_path / "alone") == 0
    assert upscale(source, "-o", tmp_path / "other-seed", "--seed", "1") == 0

    result = (tmp_path / "both" / "b.png").read_bytes()
    assert (tmp_path / "alone" / "b.png").read_bytes() == result
    assert (tmp_path / "other-seed" / "b.png").read_bytes() != result


# --- Captioning with --caption-model ----------------------------------------------------------------------------

CAPTION_MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory) -> Path:
    return save_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"))


@pytest.fixture
def caption_options(captioner_dir) -> list[str]:
    return ["--caption-model", str(captioner_dir), "--caption-max-new-tokens", str(CAPTION_MAX_NEW_TOKENS)]


def library_captions(captioner_dir: Path, *image_paths: Path, seed: int = 0, batch_size: int = 1) -> list[str]:
    """What `Captioner` itself says about the images, with the CLI's settings."""
    images = []
    for path in image_paths:
        with PIL.Image.open(path) as image:
            images.append(image.convert("RGB"))
    with Captioner(
        captioner_dir, max_new_tokens=CAPTION_MAX_NEW_TOKENS, seed=seed, batch_size=batch_size, device="cpu"
    ) as captioner:
        return captioner(images)


def test_caption_model_captions_first_and_writes_caption_files(
    model_dir, captioner_dir, caption_options, prompts, tmp_path, monkeypatch, capsys
):
    a = write_image(tmp_path / "in" / "a.png", seed=1)
    b = write_image(tmp_path / "in" / "b.png", size=(28, 20), seed=2)
    expected = library_captions(captioner_dir, a) + library_captions(captioner_dir, b)
    events = []
    original_unload, original_load = Captioner.unload, StableDiffusion3SRPipeline.from_pretrained

    def unload(self):
        events.append("captioner unloaded")
        original_unload(self)

    def from_pretrained(*args, **kwargs):
        events.append("pipeline loaded")
        return original_load(*args, **kwargs)

    monkeypatch.setattr(Captioner, "unload", unload)
    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_pretrained", from_pretrained)
    options = [option for option in FAST_OPTIONS if option != "--quiet"]
    args = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_dir), *caption_options, *options]

    assert main(args) == 0

    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a.txt", "b.png", "b.txt"]
    captions = [(tmp_path / "out" / name).read_text(encoding="utf-8") for name in ("a.txt", "b.txt")]
    assert captions == [expected[0] + "\n", expected[1] + "\n"]
    assert prompts == [caption.strip() for caption in captions] and all(prompts)
    assert events == ["captioner unloaded", "pipeline loaded"]  # the two models are never in memory together
    assert captured.err.index(f"captioning 2 images with {captioner_dir}") < captured.err.index("upscaling 2 images")
    assert captured.out.strip().endswith(
        "2 upscaled, 0 skipped (exist), 0 failed; captions: 2 new, 0 reused, 0 failed"
    )


def test_an_existing_caption_file_is_read_not_regenerated(upscale, caption_options, prompts, tmp_path, monkeypatch):
    source = write_image(tmp_path / "photo.png")
    assert upscale(source, "-o", tmp_path / "out", *caption_options) == 0
    (tmp_path / "out" / "photo.txt").write_text("  a hand-written caption\n", encoding="utf-8")

    def no_loading(self, *args, **kwargs):
        raise AssertionError("the captioner must not be loaded when every caption exists")

    monkeypatch.setattr(Captioner, "__init__", no_loading)
    # --overwrite replaces the image, not its caption: edit a caption, then upscale again.
    assert upscale(source, "-o", tmp_path / "out", "--overwrite", *caption_options) == 0

    assert prompts[1] == "a hand-written caption" and prompts[0] != prompts[1]
    assert (tmp_path / "out" / "photo.txt").read_text(encoding="utf-8") == "  a hand-written caption\n"


def test_a_skipped_image_is_not_captioned(upscale, caption_options, tmp_path, monkeypatch, capsys):
    source = write_image(tmp_path / "photo.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photo.png").write_bytes(b"an earlier result")
    monkeypatch.setattr(Captioner, "__init__", lambda self, *args, **kwargs: pytest.fail("loaded"))

    assert upscale(source, "-o", tmp_path / "out", *caption_options) == 0
    assert os.listdir(tmp_path / "out") == ["photo.png"]
    assert "0 upscaled, 1 skipped (exist), 0 failed; captions: 0 new, 0 reused, 0 failed" in capsys.readouterr().out


def test_captions_dir_wins_over_caption_model(upscale, caption_options, prompts, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png", seed=1)
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a red brick house\n", encoding="utf-8")

    args = ["--captions-dir", tmp_path / "captions", *caption_options]
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", *args) == 0

    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "b.txt"]  # a.png was not captioned
    assert prompts == ["a red brick house", (tmp_path / "out" / "b.txt").read_text(encoding="utf-8").strip()]


def test_a_failed_caption_is_reported_and_the_image_upscaled_without_one(
    upscale, caption_options, prompts, tmp_path, monkeypatch, capsys
):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "odd.png", size=(23, 17), seed=1)
    original_call = Captioner.__call__

    def fail_on_odd(self, images):
        if images[0].size == (23, 17):
            raise RuntimeError("the model broke")
        return original_call(self, images)

    monkeypatch.setattr(Captioner, "__call__", fail_on_odd)

    assert upscale(tmp_path / "in", "-o", tmp_path / "out", *caption_options) == 1  # a missing caption is a failure

    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a.txt", "odd.png"]
    assert image_size(tmp_path / "out" / "odd.png") == (46, 34)
    assert prompts == [(tmp_path / "out" / "a.txt").read_text(encoding="utf-8").strip(), ""]
    assert f"cannot caption {tmp_path / 'in' / 'odd.png'}: the model broke (upscaling it without a caption)" in (
        captured.err
    )
    assert "Traceback" not in captured.err
    assert captured.out.strip() == "2 upscaled, 0 skipped (exist), 0 failed; captions: 1 new, 0 reused, 1 failed"


def test_captions_follow_the_seed_and_the_batch_size(upscale, captioner_dir, caption_options, tmp_path):
    a = write_image(tmp_path / "in" / "a.png")
    b = write_image(tmp_path / "in" / "b.png", seed=1)

    assert upscale(a, "-o", tmp_path / "seed-1", "--seed", "1", *caption_options) == 0
    assert upscale(tmp_path / "in", "-o", tmp_path / "batched", "--caption-batch-size", "2", *caption_options) == 0

    def read(path: Path) -> str:
        return path.read_text(encoding="utf-8").strip()

    assert [read(tmp_path / "seed-1" / "a.txt")] == library_captions(captioner_dir, a, seed=1)
    batched = [read(tmp_path / "batched" / name) for name in ("a.txt", "b.txt")]
    assert batched == library_captions(captioner_dir, a, b, batch_size=2)


def test_a_caption_model_that_cannot_load_is_one_clear_error(model_dir, tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    missing = tmp_path / "no-such-captioner"
    args = [str(source), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--caption-model", str(missing)]

    assert main([*args, *FAST_OPTIONS]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot load the caption model" in err and str(missing) in err
    assert not (tmp_path / "out").exists()  # the SR pipeline is not loaded either


# --- Entry point -----------------------------------------------------------------------------------------------


def test_module_entry_point_prints_help():
    completed = subprocess.run(
        [sys.executable, "-m", "diffusers_dit4sr.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    help_text = " ".join(completed.stdout.split())  # argparse wraps to the terminal's width
    assert help_text.startswith("usage: dit4sr-upscale")
    assert "--captions-dir" in help_text and "hf auth login" in help_text
    assert "--caption-model ID_OR_PATH" in help_text and "llava-hf/llava-1.5-13b-hf" in help_text
