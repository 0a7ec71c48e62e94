# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The Python API for folder jobs (`diffusers_dit4sr.upscale_files`) and the one-line load errors that the command
line and the demo share, on the tiny pipeline (offline, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import png
import pytest
import tifffile

from diffusers_dit4sr import StableDiffusion3SRPipeline, UpscaleSettings, runtime, upscale_files
from diffusers_dit4sr.captioning import Captioner
from diffusers_dit4sr.cli.main import main as upscale_main
from diffusers_dit4sr.file_utils import temporary_path
from diffusers_dit4sr.photo import eight_bit_rgb, read_photo, save_upscaled
from diffusers_dit4sr.tiny import save_tiny_captioner
from diffusers_dit4sr.upscaling import Job, PlanError, RunEvents
from diffusers_dit4sr.upscaling.jobs import plan_batches
from diffusers_dit4sr.upscaling.outputs import damaged_output

from .utils import camera_exif

FAST = UpscaleSettings(scale=2, steps=1, tile_size=64, tile_overlap=32, process_size=64)


class Recorder(RunEvents):
    """Every event's message or job, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def note(self, message):
        self.events.append(("note", message))

    def warning(self, message):
        self.events.append(("warning", message))

    def error(self, message):
        self.events.append(("error", message))

    def skipped(self, job):
        self.events.append(("skipped", job.source.name))

    def step(self, pipe):
        self.events.append(("step", pipe.num_timesteps))

    def of(self, kind: str) -> list:
        return [value for event, value in self.events if event == kind]


@pytest.fixture
def prompts(monkeypatch) -> list:
    """The caption of every image the pipeline got, in order (the pipeline still runs)."""
    calls = []
    original_call = StableDiffusion3SRPipeline.__call__

    def spy(self, image, prompt=None, **kwargs):
        calls.extend(prompt)
        return original_call(self, image, prompt=prompt, **kwargs)

    monkeypatch.setattr(StableDiffusion3SRPipeline, "__call__", spy)
    return calls


def write_image(path: Path, size: tuple[int, int] = (20, 28), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels).save(path)
    return path


def no_loading():
    pytest.fail("a model was loaded with nothing to do")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_folder_is_upscaled_existing_outputs_skipped_and_a_bad_file_reported(pipe, tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        write_image(tmp_path / "in" / f"{name}.png", seed=seed)
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    events = Recorder()

    counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=pipe, settings=FAST, events=events)

    assert (counts.upscaled, counts.skipped, counts.failed, counts.ok) == (2, 0, 1, False)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]  # nothing partial, no temporary file
    with PIL.Image.open(tmp_path / "out" / "a.png") as image:
        assert image.size == (40, 56)
    (error,) = events.of("error")
    assert error.startswith(f"cannot read {tmp_path / 'in' / 'bad.png'}") and error.endswith("(skipped)")
    assert events.of("step") == [1, 1]

    # Again: the outputs exist, so nothing loads; the bad file is reported again.
    events = Recorder()
    counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=no_loading, settings=FAST, events=events)
    assert (counts.upscaled, counts.skipped, counts.failed) == (0, 2, 1)
    assert events.of("skipped") == ["a.png", "b.png"]


def test_a_run_killed_half_way_resumes(pipe, tmp_path):
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        write_image(tmp_path / "in" / f"{name}.png", seed=seed)
    upscale_files([tmp_path / "in" / "a.png"], tmp_path / "out" / "a.png", pipeline=pipe, settings=FAST)
    done = (tmp_path / "out" / "a.png").read_bytes()
    partial = temporary_path(tmp_path / "out" / "b.png", pid=dead_pid())  # what a killed run was writing
    partial.write_bytes(b"partial")
    events = Recorder()

    counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=pipe, settings=FAST, events=events)

    assert (counts.upscaled, counts.skipped, counts.failed) == (2, 1, 0)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "c.png"]
    assert (tmp_path / "out" / "a.png").read_bytes() == done
    assert f"removed {partial}, a temporary file left by an interrupted run" in events.of("note")


def test_results_do_not_depend_on_batching(pipe, tmp_path):
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        write_image(tmp_path / "in" / f"{name}.png", seed=seed)
    upscale_files([tmp_path / "in"], tmp_path / "one", pipeline=pipe, settings=FAST)
    batched = UpscaleSettings(**{**FAST.__dict__, "batch_size": 3})
    upscale_files([tmp_path / "in"], tmp_path / "three", pipeline=pipe, settings=batched)
    for name in "abc":
        one = np.asarray(PIL.Image.open(tmp_path / "one" / f"{name}.png"), dtype=np.int16)
        three = np.asarray(PIL.Image.open(tmp_path / "three" / f"{name}.png"), dtype=np.int16)
        assert np.abs(one - three).max() <= 1


def test_captions_are_read_given_or_generated_and_reused(pipe, prompts, tmp_path):
    write_image(tmp_path / "in" / "a.png", seed=0)
    write_image(tmp_path / "in" / "b.png", seed=1)
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a red door\n")

    upscale_files([tmp_path / "in"], tmp_path / "given", pipeline=pipe, settings=FAST, prompt="a cat")
    assert prompts == ["a cat", "a cat"]

    prompts.clear()
    captioner_dir = save_tiny_captioner(tmp_path / "captioner")
    loads = []

    def load_captioner() -> Captioner:
        loads.append(1)
        return Captioner(captioner_dir, max_new_tokens=6, device="cpu")

    counts = upscale_files(
        [tmp_path / "in"],
        tmp_path / "out",
        pipeline=pipe,
        settings=FAST,
        captions_dir=tmp_path / "captions",
        captioner=load_captioner,
    )
    generated = (tmp_path / "out" / "b.txt").read_text().strip()
    assert (counts.captions.written, counts.captions.reused, counts.captions.failed) == (1, 0, 0)
    assert prompts == ["a red door", generated] and not (tmp_path / "out" / "a.txt").exists()

    prompts.clear()
    (tmp_path / "out" / "b.png").unlink()
    counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=pipe, settings=FAST, captioner=load_captioner)
    # a.png exists (skipped); b's caption file is reused: the captioner is not loaded again.
    assert (counts.upscaled, counts.skipped, counts.captions.reused, len(loads)) == (1, 1, 1, 1)
    assert prompts == [generated]


def rotated_rgba_tiff(path: Path) -> None:
    """An 8-bit RGBA TIFF stored 40 x 24 with EXIF orientation 6 (Pillow alone turns it the wrong way)."""
    exif = camera_exif(6)
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 4), dtype=np.uint8)).save(path, exif=exif)


def rotated_sixteen_bit_tiff(path: Path) -> None:
    """A 16-bit RGB TIFF stored 40 x 24 with orientation 8."""
    samples = np.random.default_rng(0).integers(0, 65536, (24, 40, 3)).astype(np.uint16)
    tifffile.imwrite(path, samples, photometric="rgb", extratags=[(274, "H", 1, 8, True)])


def rotated_jpeg(path: Path) -> None:
    """A JPEG stored 40 x 24 with orientation 5."""
    pixels = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(path, exif=camera_exif(5), quality=95)


@pytest.mark.parametrize("write", [rotated_rgba_tiff, rotated_sixteen_bit_tiff, rotated_jpeg])
def test_a_rotated_photo_is_captioned_as_it_is_upscaled(write, pipe, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / f"photo{'.jpg' if write is rotated_jpeg else '.tif'}")
    captioned, upscaled = [], []

    def caption_batch(self, images):
        captioned.extend(np.asarray(image) for image in images)
        return ["a caption"] * len(images)

    original_call = StableDiffusion3SRPipeline.__call__

    def spy(self, image, **kwargs):
        upscaled.extend(np.asarray(eight_bit_rgb(item)) for item in image)
        return original_call(self, image, **kwargs)

    monkeypatch.setattr(Captioner, "_caption_batch", caption_batch)
    monkeypatch.setattr(StableDiffusion3SRPipeline, "__call__", spy)
    captioner_dir = save_tiny_captioner(tmp_path / "captioner")
    counts = upscale_files(
        [tmp_path / "in"],
        tmp_path / "out",
        pipeline=pipe,
        settings=FAST,
        captioner=lambda: Captioner(captioner_dir, device="cpu"),
    )
    assert (counts.upscaled, counts.captions.written) == (1, 1)
    assert captioned[0].shape == upscaled[0].shape == (40, 24, 3)  # turned upright: a quarter turn
    np.testing.assert_array_equal(captioned[0], upscaled[0])


def test_a_model_that_cannot_load_fails_its_images_in_one_line(tmp_path):
    write_image(tmp_path / "in" / "a.png")
    events = Recorder()

    def load():
        raise runtime.LoadError("cannot load the pipeline from 'x': because")

    counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=load, settings=FAST, events=events)
    assert (counts.failed, counts.stopped, events.of("error")) == (
        1,
        True,
        ["cannot load the pipeline from 'x': because"],
    )


def test_inputs_and_outputs_that_cannot_work_raise_before_anything_is_done(tmp_path):
    write_image(tmp_path / "in" / "a.png")
    with pytest.raises(PlanError, match="no such file or folder"):
        upscale_files([tmp_path / "missing"], tmp_path / "out", pipeline=no_loading)
    with pytest.raises(PlanError, match="^`output` .* is the folder of the input"):
        upscale_files([tmp_path / "in"], tmp_path / "in", pipeline=no_loading)
    with pytest.raises(ValueError, match="^`prompt` gives every image the same caption; .* with `captions_dir`"):
        upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=no_loading, prompt="a cat", captions_dir=tmp_path)
    with pytest.raises(ValueError, match="tile_overlap"):
        UpscaleSettings(tile_size=64, tile_overlap=64)
    with pytest.raises(ValueError, match="color_fix must be one of adain, wavelet, none"):
        UpscaleSettings(color_fix="auto")
    with pytest.raises(PlanError, match=r"a\.jpg: `bit_depth` 16 needs a PNG or TIFF file, not JPEG"):
        upscale_files(
            [tmp_path / "in" / "a.png"],
            tmp_path / "out" / "a.jpg",
            pipeline=no_loading,
            settings=UpscaleSettings(bit_depth=16),
        )
    with pytest.raises(PlanError, match="`bit_depth` must be 8, 16 or 'auto', got 12"):
        upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=no_loading, settings=UpscaleSettings(bit_depth=12))
    assert not (tmp_path / "out").exists()


def test_photos_keep_alpha_and_sixteen_bits_through_batches(pipe, tmp_path):
    """One call for three photos of one size (8-bit RGBA, 16-bit RGB, 8-bit RGB): each keeps what it had."""
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "c.png", size=(10, 12))
    PIL.Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8), "RGBA").save(tmp_path / "in" / "a.png")
    deep = rng.integers(0, 65536, (12, 10 * 3), dtype=np.uint16)
    with (tmp_path / "in" / "b.png").open("wb") as file:
        png.Writer(10, 12, greyscale=False, bitdepth=16).write(file, deep)
    calls = []
    original_call = StableDiffusion3SRPipeline.__call__

    def spy(self, image, **kwargs):
        calls.append(len(image))
        return original_call(self, image, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StableDiffusion3SRPipeline, "__call__", spy)
        settings = UpscaleSettings(scale=2, steps=1, tile_size=64, tile_overlap=32, process_size=64, batch_size=3)
        counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=pipe, settings=settings)
    assert (counts.upscaled, calls) == (3, [3])
    with PIL.Image.open(tmp_path / "out" / "a.png") as image:
        assert (image.mode, image.size) == ("RGBA", (20, 24))
    with (tmp_path / "out" / "b.png").open("rb") as file:
        width, height, rows, info = png.Reader(file=file).asDirect()
        samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    assert (width, height, info["bitdepth"], info["planes"]) == (20, 24, 16, 3)
    assert len(np.unique(samples)) > 256
    with PIL.Image.open(tmp_path / "out" / "c.png") as image:
        assert (image.mode, image.size) == ("RGB", (20, 24))


def test_plan_batches_follows_the_order_of_each_batchs_first_image():
    jobs = [Job(Path(f"{name}.png"), Path(f"out/{name}.png")) for name in "abcde"]
    sizes = dict(zip(jobs, [(1, 1), (2, 2), (1, 1), (1, 1), (2, 2)], strict=True))
    names = [[job.source.stem for job in batch] for batch in plan_batches(jobs, sizes, batch_size=2)]
    assert names == [["a", "c"], ["b", "e"], ["d"]]
    assert plan_batches(jobs, sizes, batch_size=1) == [[job] for job in jobs]


# --- Existing outputs, output names ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage header"])
def test_a_damaged_output_is_redone_on_the_next_run(pipe, tmp_path, damage):
    write_image(tmp_path / "in" / "a.png", seed=0)
    write_image(tmp_path / "in" / "b.png", seed=1)
    upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=pipe, settings=FAST)
    whole = {name: (tmp_path / "out" / name).read_bytes() for name in ("a.png", "b.png")}
    broken = tmp_path / "out" / "b.png"
    broken.write_bytes(
        {"empty": b"", "truncated": whole["b.png"][: len(whole["b.png"]) // 2], "garbage header": b"\0" * 64}[damage]
    )
    events = Recorder()

    counts = upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=pipe, settings=FAST, events=events)

    assert (counts.upscaled, counts.skipped, counts.failed) == (1, 1, 0)
    assert events.of("skipped") == ["a.png"]
    (warning,) = events.of("warning")
    assert warning.startswith(f"{broken} is damaged (") and warning.endswith(
        f"upscaling {tmp_path / 'in' / 'b.png'} again"
    )
    assert {name: (tmp_path / "out" / name).read_bytes() for name in ("a.png", "b.png")} == whole


def test_a_whole_output_of_other_settings_is_kept_with_a_warning(pipe, tmp_path):
    source = write_image(tmp_path / "in" / "a.png")  # 20 x 28 px: 40 x 56 px at x2
    earlier = write_image(tmp_path / "out" / "a.png", size=(80, 112)).read_bytes()  # an x4 run's
    events = Recorder()
    counts = upscale_files([source], tmp_path / "out", pipeline=no_loading, settings=FAST, events=events)
    assert (counts.upscaled, counts.skipped, events.of("skipped")) == (0, 1, ["a.png"])
    assert events.of("warning") == [
        f"kept {tmp_path / 'out' / 'a.png'}: 80x112 px, made with other settings than this run's 40x56 px "
        "(overwrite replaces it)"
    ]
    assert (tmp_path / "out" / "a.png").read_bytes() == earlier


def whole_and_cut_files(folder: Path) -> list[tuple[Path, bool]]:
    """Outputs as `photo.save_upscaled` writes them in every format and depth, whole (True) and cut short (False)."""
    rgba = np.random.default_rng(0).random((24, 20, 4)).astype(np.float32)
    source = read_photo(write_image(folder / "source.png", size=(10, 12)))
    files = []
    for name, depth in [("a.png", 8), ("b.png", 16), ("c.jpg", 8), ("d.webp", 8), ("e.bmp", 8), ("f.tif", 8)]:
        path = save_upscaled(source, rgba[..., :3], folder / name, bit_depth=depth)
        files.append((path, True))
        data = path.read_bytes()
        for index, cut in enumerate((len(data) - 1, len(data) // 2, 30, 0)):
            damaged = folder / f"cut{index}-{name}"
            damaged.write_bytes(data[:cut])
            files.append((damaged, False))
    deep_tiff = folder / "g.tif"
    tifffile.imwrite(deep_tiff, (rgba * 65535).astype(np.uint16), photometric="rgb", extrasamples=("unassalpha",))
    files.append((deep_tiff, True))
    (folder / "cut-g.tif").write_bytes(deep_tiff.read_bytes()[:-5])
    files.append((folder / "cut-g.tif", False))
    return files


def test_damaged_output_tells_whole_files_from_cut_ones_in_every_format(tmp_path):
    for path, whole in whole_and_cut_files(tmp_path):
        problem = damaged_output(path)
        assert (problem is None) == whole, (path.name, problem)
        if not whole:
            assert problem.startswith(("cut short", "it does not decode")), (path.name, problem)


@pytest.mark.parametrize(
    "names", [("Photo.jpg", "photo.png"), ("CAFÉ.png", "café.jpg"), ("straße.png", "STRASSE.jpg")]
)
def test_outputs_that_differ_only_in_case_are_refused(tmp_path, names):
    for index, name in enumerate(names):
        write_image(tmp_path / "in" / name, seed=index)
    with pytest.raises(PlanError, match="one file where names ignore case"):
        upscale_files([tmp_path / "in"], tmp_path / "out", pipeline=no_loading)
    assert not (tmp_path / "out").exists()


def test_a_252_byte_name_is_upscaled_and_an_output_name_too_long_refused_before_any_model(pipe, tmp_path):
    long_source = write_image(tmp_path / "in" / ("a" * 248 + ".png"))  # 252 bytes: the longest common names
    counts = upscale_files([long_source], tmp_path / "out", pipeline=pipe, settings=FAST)
    assert counts.upscaled == 1 and os.listdir(tmp_path / "out") == [long_source.name]

    too_long = tmp_path / "single" / ("b" * 252 + ".tiff")  # 257 bytes
    with pytest.raises(PlanError, match=r"the output's name is 257 bytes long, and its folder takes names up to 255"):
        upscale_files([long_source], too_long, pipeline=no_loading)


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
def test_a_link_planted_where_an_output_is_written_is_not_followed(pipe, tmp_path):
    source = write_image(tmp_path / "in" / "photo.png")
    victim = tmp_path / "victim.txt"
    victim.write_text("an unrelated file")
    planted = tmp_path / "out" / f".photo.png.{os.getpid()}.tmp"  # the temporary name earlier versions used
    planted.parent.mkdir()
    planted.symlink_to(victim)

    assert upscale_files([source], tmp_path / "out", pipeline=pipe, settings=FAST).upscaled == 1
    assert victim.read_text() == "an unrelated file" and planted.is_symlink()
    output = tmp_path / "out" / "photo.png"
    assert not output.is_symlink() and damaged_output(output) is None


# --- One line for a model that cannot load, in the command line and the demo -----------------------------------


def break_json(folder: Path) -> None:
    (folder / "transformer" / "config.json").write_text("{ not json")


def truncate_weights(folder: Path) -> None:
    weights = next((folder / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])


def unknown_class(folder: Path) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    index["transformer"] = ["diffusers_dit4sr.models.transformer_dit4sr", "NoSuchModel"]
    (folder / "model_index.json").write_text(json.dumps(index))


def no_components(folder: Path) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({key: index[key] for key in index if key.startswith("_")}))


def any_other_failure(folder: Path) -> None:
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": 7}))


@pytest.mark.parametrize("breaking", [break_json, truncate_weights, unknown_class, no_components, any_other_failure])
def test_a_broken_model_folder_is_the_same_line_in_the_command_and_the_demo(
    breaking, tiny_pipeline_dir, tmp_path, monkeypatch, capsys
):
    gr = pytest.importorskip("gradio")
    from diffusers_dit4sr.cli import demo

    folder = tmp_path / "broken"
    folder.mkdir()
    for path in tiny_pipeline_dir.rglob("*"):
        if path.is_file():
            target = folder / path.relative_to(tiny_pipeline_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    breaking(folder)
    source = write_image(tmp_path / "photo.png")

    assert (
        upscale_main([str(source), "-o", str(tmp_path / "out"), "--model", str(folder), "--device", "cpu", "--quiet"])
        == 1
    )
    command_lines = capsys.readouterr().err.strip().splitlines()
    monkeypatch.setattr(gr.Blocks, "launch", lambda *args, **kwargs: pytest.fail("served a broken model"))
    assert demo.main(["--model", str(folder), "--device", "cpu"]) == 1
    demo_lines = capsys.readouterr().err.strip().splitlines()

    assert len(command_lines) == 1 and "Traceback" not in command_lines[0]
    message = command_lines[0].removeprefix("dit4sr-upscale: error: ")
    assert message.startswith(f"cannot load the pipeline from {str(folder)!r}")
    assert demo_lines[-1] == f"dit4sr-demo: error: {message}"
