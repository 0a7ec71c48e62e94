# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-demo` without a browser: the page's handlers called directly, the app's events and the command line, on the
tiny pipeline (offline, CPU). `test_demo_browser.py` drives the page itself."""

import importlib.metadata
import math
import runpy
import socket
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import PIL.ImageCms
import png
import pytest
import torch

gr = pytest.importorskip("gradio", reason="the demo needs Gradio: pip install -e '.[demo]'")

from gradio.data_classes import ImageData  # noqa: E402

from diffusers_dit4sr import demo as demo_module  # noqa: E402
from diffusers_dit4sr.captioning import Captioner  # noqa: E402
from diffusers_dit4sr.cli.demo import main  # noqa: E402
from diffusers_dit4sr.cli.main import main as upscale_main  # noqa: E402
from diffusers_dit4sr.demo import MAX_SEED, DemoHandlers, build_demo  # noqa: E402
from diffusers_dit4sr.image_processing import MAX_OUTPUT_SIDE  # noqa: E402
from diffusers_dit4sr.tiny import save_tiny_captioner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample_lr.png"  # 128 x 85 px
EXAMPLES = ROOT / "examples"
SAMPLE_SIZE = (128, 85)
BICUBIC = PIL.Image.Resampling.BICUBIC
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def handlers(pipe) -> DemoHandlers:
    return DemoHandlers(pipe)


def upscale(handlers: DemoHandlers, image=SAMPLE, **options):
    """`handlers.upscale` with the page's defaults and 1 step, unless `options` say otherwise."""
    values = {
        "caption": "a cat",
        "scale": 4,
        "steps": 1,
        "guidance": 8,
        "seed": 0,
        "randomize_seed": False,
        "color_fix": "adain",
        "tile_size": 512,
        **options,
    }
    return handlers.upscale(str(image) if image is not None else None, **values)


def pixels(path: str) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
@pytest.mark.parametrize("scale", [0.5, 1.5, 2.7])
def test_output_size_follows_the_scale(handlers, scale):
    (before, after), path, info, seed = upscale(handlers, scale=scale)
    size = round(SAMPLE_SIZE[0] * scale), round(SAMPLE_SIZE[1] * scale)
    with PIL.Image.open(path) as result:
        assert result.format == "PNG" and result.size == size
    assert Path(path).name == f"sample_lr_dit4sr_x{scale:g}.png"
    np.testing.assert_array_equal(np.asarray(after), pixels(path))  # an opaque 8-bit photo: the preview is the PNG
    assert f"{size[0]} × {size[1]} px" in info and "1 step in" in info and seed == 0
    with PIL.Image.open(SAMPLE) as lr:  # "before" is the bicubic enlargement to the same size
        np.testing.assert_array_equal(np.asarray(before), np.asarray(lr.convert("RGB").resize(size, BICUBIC)))


@pytest.mark.slow
def test_same_seed_same_result_and_randomized_seeds(handlers):
    first = upscale(handlers, seed=7)
    first_pixels = pixels(first[1])
    assert first_pixels.shape == (85 * 4, 128 * 4, 3)
    second = upscale(handlers, seed=7)
    np.testing.assert_array_equal(pixels(second[1]), first_pixels)
    assert not Path(first[1]).exists()  # each result replaces the previous one's file

    randomized = [upscale(handlers, seed=7, randomize_seed=True) for _ in range(2)]
    seeds = [result[3] for result in randomized]
    assert seeds[0] != seeds[1] and all(0 <= seed <= MAX_SEED for seed in seeds)
    assert f"seed {seeds[1]}" in randomized[1][2]
    assert not np.array_equal(pixels(randomized[1][1]), first_pixels)


@pytest.mark.slow
def test_page_gives_the_image_dit4sr_upscale_gives(handlers, tiny_pipeline_dir, tmp_path):
    page = upscale(handlers, caption="a cat", scale=2, seed=3)
    target = tmp_path / "cli.png"
    argv = [str(SAMPLE), "-o", str(target), "--model", str(tiny_pipeline_dir), "--device", "cpu", "--quiet"]
    assert upscale_main([*argv, "--prompt", "a cat", "--scale", "2", "--seed", "3", "--steps", "1"]) == 0
    difference = np.abs(pixels(page[1]).astype(int) - pixels(str(target)))
    assert difference.max() <= 1 and difference.mean() < 1e-3  # the same image, to float round-off


@pytest.mark.slow
def test_the_download_keeps_alpha_profile_and_sixteen_bits_and_the_slider_shows_opaque_previews(pipe, tmp_path):
    profile = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()
    rgba = np.random.default_rng(0).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[3:9, 2:7, 3] = 255
    source = tmp_path / "logo.png"
    PIL.Image.fromarray(rgba, "RGBA").save(source, icc_profile=profile)
    # Gradio hands the handlers the uploaded file's own path, so nothing of it is lost on the way.
    image_box = next(block for block in build_demo(pipe).blocks.values() if block.elem_id == "lr-image")
    assert image_box.preprocess(ImageData(path=str(source), orig_name="logo.png")) == str(source)

    handlers = DemoHandlers(pipe)  # its folder of results lives as long as it does
    (before, after), path, info, seed = upscale(handlers, image=source, scale=2)

    with PIL.Image.open(path) as result:
        assert (result.mode, result.size, result.info["icc_profile"]) == ("RGBA", (20, 24), profile)
        alpha = np.asarray(result)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255 and alpha[10:14, 8:10].min() == 255
    assert before.mode == after.mode == "RGB" and before.size == after.size == (20, 24)
    with PIL.Image.open(path) as result:  # the preview is the result's colour, without its alpha
        np.testing.assert_array_equal(np.asarray(after), np.asarray(result)[..., :3])

    deep = tmp_path / "scan.png"
    with deep.open("wb") as file:
        rows, cols = np.mgrid[0:12, 0:30]
        png.Writer(10, 12, greyscale=False, bitdepth=16).write(file, (rows * 5000 + cols * 700).astype(np.uint16))
    path = upscale(handlers, image=deep, scale=2)[1]
    with open(path, "rb") as file:
        width, height, pixel_rows, png_info = png.Reader(file=file).asDirect()
        samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in pixel_rows])
    assert (width, height, png_info["bitdepth"]) == (20, 24, 16) and len(np.unique(samples)) > 256


@pytest.mark.slow
def test_progress_is_reported_once_per_step(handlers):
    calls = []

    def progress(value, desc=None, **kwargs):
        calls.append((value, desc))
        handlers.stop(SimpleNamespace(session_hash="another page"))  # must not stop this run

    result = upscale(handlers, steps=3, progress=progress)
    assert calls == [((1, 3), "Denoising"), ((2, 3), "Denoising"), ((3, 3), "Denoising")]
    assert result[1] is not None and "3 steps" in result[2]


@pytest.mark.slow
def test_stop_interrupts_the_run_after_the_current_step(handlers):
    calls = []
    request = SimpleNamespace(session_hash="this page")

    def progress(value, **kwargs):
        calls.append(value)
        if len(calls) == 2:
            handlers.stop(request)

    comparison, path, info, seed = upscale(handlers, steps=6, progress=progress, request=request)
    assert calls == [(1, 6), (2, 6)]
    assert comparison is None and path is None and info == "Stopped after 2 of 6 steps." and seed == 0

    assert upscale(handlers)[1] is not None  # the next run is not stopped by the earlier request


@pytest.mark.parametrize(
    "options, message",
    [
        ({"image": None}, "Upload a photo first"),
        ({"scale": 0}, "Scale must be above 0"),
        ({"scale": -2}, "Scale must be above 0"),
        ({"scale": None}, "Scale must be a number"),
        ({"scale": math.nan}, "Scale must be a number"),
        ({"scale": 40}, "makes 5120 × 3400 px; this demo makes images up to 4096 px a side"),
        ({"scale": 0.1}, "×0.1 is too small for 128 × 85 px: the photo would first be enlarged to 7708 × 5119 px"),
        ({"steps": 0}, "Steps must be a whole number of at least 1"),
        ({"steps": 2.5}, "Steps must be a whole number"),
        ({"guidance": math.inf}, "Guidance must be a number"),
        ({"seed": -1}, "Seed must be a whole number of at least 0 and at most 4294967295"),
        ({"color_fix": "sharpen"}, "Color fix must be one of adain, wavelet, none"),
        ({"tile_size": 200}, "Cannot upscale this photo: .*tile_size"),
    ],
)
def test_bad_requests_are_page_messages(handlers, options, message):
    with pytest.raises(gr.Error, match=message):
        upscale(handlers, **options)


def test_limits_on_input_and_output_sides(pipe, tmp_path):
    too_wide = tmp_path / "wide.png"
    PIL.Image.new("RGB", (65, 8)).save(too_wide)
    small = tmp_path / "small.png"
    PIL.Image.new("RGB", (64, 8)).save(small)
    handlers = DemoHandlers(pipe, max_input_side=64, max_output_side=100)
    with pytest.raises(gr.Error, match=r"wide.png is 65 × 8 px; this demo accepts photos up to 64 px a side"):
        upscale(handlers, image=too_wide, scale=1)
    with pytest.raises(gr.Error, match=r"×2 of 64 × 8 px makes 128 × 16 px; this demo makes images up to 100 px"):
        upscale(handlers, image=small, scale=2)


@pytest.mark.parametrize("content", [b"not an image", PNG_SIGNATURE + b"\0\0\0\x0dIHDR" + b"\0" * 8])
def test_an_unreadable_upload_is_a_page_message_naming_the_users_file_not_the_servers_path(
    handlers, tmp_path, content
):
    upload = tmp_path / "gradio" / "0a1b2c3d" / "holiday.png"  # where Gradio keeps an upload: its own name, inside
    upload.parent.mkdir(parents=True)
    upload.write_bytes(content)
    with pytest.raises(gr.Error) as error:
        upscale(handlers, image=upload)
    message = error.value.message
    assert message.startswith("Cannot read holiday.png as an image: ") and str(tmp_path) not in message


def png_of_zeros(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> Path:
    """A valid PNG of `width` x `height` black pixels, made without holding them: a small file that decodes big."""
    samples = {0: 1, 2: 3}[colour_type] * bit_depth // 8
    compressor, row = zlib.compressobj(1), bytes(1 + width * samples)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "width, height, bit_depth, colour_type",
    [(12000, 12000, 8, 0), (6000, 6000, 16, 2)],  # 144 MB of grey pixels; 216 MB of 16-bit RGB
)
def test_a_photo_over_the_side_limit_is_refused_from_its_header_before_decoding(
    handlers, tmp_path, monkeypatch, width, height, bit_depth, colour_type
):
    bomb = png_of_zeros(tmp_path / "bomb.png", width, height, bit_depth, colour_type)
    assert bomb.stat().st_size < 2**20  # under a megabyte
    monkeypatch.setattr(demo_module, "read_photo", lambda path: pytest.fail("decoded a photo over the limits"))
    monkeypatch.setattr(PIL.Image.Image, "load", lambda self: pytest.fail("decoded a photo over the limits"))
    with pytest.raises(gr.Error, match=rf"bomb.png is {width} × {height} px; this demo accepts photos up to 2048"):
        upscale(handlers, image=bomb)
    with pytest.raises(gr.Error, match=rf"bomb.png is {width} × {height} px"):
        DemoHandlers(handlers.pipe, lambda images: pytest.fail("captioned")).caption(str(bomb))


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(pipe, tmp_path, monkeypatch):
    big = tmp_path / "scan.png"
    big.write_bytes(SAMPLE.read_bytes() + b"\0" * 2**20)
    monkeypatch.setattr(demo_module, "read_photo_size", lambda path: pytest.fail("read a file over the limit"))
    handlers = DemoHandlers(pipe, max_file_size=2**20)
    with pytest.raises(gr.Error, match=r"scan.png is 1.0\d* MB; this demo accepts files up to 1 MB"):
        upscale(handlers, image=big)


@pytest.mark.parametrize(
    "options",
    [{"max_input_side": 0}, {"max_output_side": MAX_OUTPUT_SIDE + 1}, {"max_file_size": 0}, {"max_file_size": 1.5}],
)
def test_limits_must_be_sensible(pipe, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        DemoHandlers(pipe, **options)
    with pytest.raises(ValueError, match="queue_size"):
        build_demo(pipe, queue_size=0)


def test_caption_fills_the_box(pipe, tmp_path):
    captioner = Captioner(save_tiny_captioner(tmp_path / "captioner"), max_new_tokens=6, device="cpu")
    caption = DemoHandlers(pipe, captioner).caption(str(SAMPLE))
    assert isinstance(caption, str)
    with pytest.raises(gr.Error, match="No captioner is configured"):
        DemoHandlers(pipe).caption(str(SAMPLE))


def events_by_name(demo: gr.Blocks) -> dict[str, list]:
    """The app's events, by the name of the handler they call."""
    events = {}
    for block_fn in demo.fns.values():
        events.setdefault(block_fn.name, []).append(block_fn)
    return events


def test_model_events_run_one_at_a_time(pipe, tmp_path):
    events = events_by_name(build_demo(pipe))
    (run,) = events["upscale"]
    assert run.concurrency_limit == 1 and run.queue
    stop_click, stop_on_unload = events["stop"]
    assert stop_click.targets[0][1] == "click" and stop_on_unload.targets[0][1] == "unload"
    assert not stop_click.queue  # a Stop must not wait behind the run it stops
    assert "caption" not in events

    captioner = Captioner(save_tiny_captioner(tmp_path / "captioner"), max_new_tokens=6, device="cpu")
    captions = events_by_name(build_demo(pipe, captioner))["caption"]
    assert len(captions) == 2  # the Caption button and a new upload
    assert all(event.concurrency_limit == 1 and event.concurrency_id == run.concurrency_id for event in captions)


@pytest.fixture
def launches(monkeypatch) -> list:
    """What `main` passes to `launch`, instead of serving."""
    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **options: calls.append((demo, options)))
    return calls


def test_main_serves_the_given_pipeline(tiny_pipeline_dir, launches, monkeypatch):
    assert main(["--model", str(tiny_pipeline_dir), "--device", "cpu", "--host", "0.0.0.0", "--port", "8123"]) == 0
    ((demo, options),) = launches
    assert options == {
        "server_name": "0.0.0.0",
        "server_port": 8123,
        "share": False,
        "auth": None,
        "max_file_size": 50 * 2**20,
    }
    assert demo.analytics_enabled is False and events_by_name(demo)["upscale"][0].concurrency_limit == 1
    assert demo._queue.max_size == 20


def test_main_bounds_uploads_and_the_queue_and_asks_for_a_login(tiny_pipeline_dir, launches, tmp_path, capsys):
    auth = tmp_path / "users.txt"
    auth.write_text("# who may use the demo\nalice:correct horse\n\nbob:b:at:tery\n")
    argv = ["--model", str(tiny_pipeline_dir), "--device", "cpu", "--max-file-size", "8", "--queue-size", "3"]
    assert main([*argv, "--share", "--auth", str(auth)]) == 0
    ((demo, options),) = launches
    assert options["max_file_size"] == 8 * 2**20 and demo._queue.max_size == 3 and options["share"] is True
    assert options["auth"] == [("alice", "correct horse"), ("bob", "b:at:tery")]
    assert "--share" not in capsys.readouterr().err

    assert main([*argv, "--share"]) == 0
    assert launches[-1][1]["auth"] is None
    assert (
        "warning: --share makes the page public at a gradio.live link: anyone who has the link can run the model"
        in (capsys.readouterr().err)
    )


def test_the_server_refuses_an_upload_over_the_limit_before_storing_it(pipe, tmp_path, monkeypatch):
    import httpx

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_demo(pipe, max_file_size=200_000)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/gradio_api/upload"
        small = httpx.post(url, files={"files": ("photo.png", SAMPLE.read_bytes(), "image/png")}, timeout=60)
        big = httpx.post(url, files={"files": ("huge.png", bytes(300_000), "image/png")}, timeout=60)
    finally:
        demo.close()
    assert small.status_code == 200 and Path(small.json()[0]).name == "photo.png"
    assert big.status_code == 413
    assert not list((tmp_path / "gradio").rglob("huge.png"))


def test_build_demo_bounds_launch_and_the_queue(pipe, launches):
    demo = build_demo(pipe, max_file_size=1234, queue_size=5)
    assert demo._queue.max_size == 5
    demo.launch()
    demo.launch(max_file_size="1gb")  # the caller's own bound wins
    assert [options["max_file_size"] for _, options in launches] == [1234, "1gb"]


def test_main_serves_a_quantized_pipeline(tiny_pipeline_dir, launches):
    options = ["--quantize", "int8", "--quantize-components", "transformer"]
    assert main(["--model", str(tiny_pipeline_dir), "--device", "cpu", *options]) == 0
    ((demo, _),) = launches
    pipe = events_by_name(demo)["upscale"][0].fn.__self__.pipe
    assert type(pipe.transformer.transformer_blocks[0].attn.to_q.weight).__name__ == "Int8Tensor"
    assert type(pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight) is torch.nn.Parameter
    assert pipe.transformer.dtype == torch.bfloat16  # the preset's dtype, without --dtype


def test_main_loads_the_captioner(tiny_pipeline_dir, launches, tmp_path):
    captioner_dir = save_tiny_captioner(tmp_path / "captioner")
    assert main(["--model", str(tiny_pipeline_dir), "--device", "cpu", "--caption-model", str(captioner_dir)]) == 0
    ((demo, options),) = launches
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7860
    assert any(fn.name == "caption" for fn in demo.fns.values())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "x", "--variant", "q"], "--variant picks one of the released models"),
        (["--cpu-offload", "--device", "cpu"], "--cpu-offload moves models to a GPU"),
        (["--caption-8bit", "--device", "cpu"], "--caption-8bit loads --caption-model in 8 bits on CUDA"),
        (["--max-output-side", str(MAX_OUTPUT_SIDE + 1)], "--max-output-side must be in"),
        (["--port", "0"], "--port must be in"),
        (["--max-file-size", "0"], "--max-file-size must be a positive number, got 0"),
        (["--queue-size", "-1"], "--queue-size must be a positive number, got -1"),
        (["--auth", "/nonexistent/users.txt"], "--auth /nonexistent/users.txt: cannot read it"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--quantize-components", "transformer"], "--quantize-components picks what --quantize quantizes"),
        (
            ["--quantize", "int8", "--dtype", "fp32", "--device", "cpu"],
            "--quantize int8: Quantization preset 'int8' computes in bfloat16",
        ),
        (
            ["--quantize", "nf4-t5", "--device", "cpu"],
            "--quantize nf4-t5: Quantization preset 'nf4-t5' needs a CUDA GPU",
        ),
    ],
)
def test_main_rejects_bad_options(argv, message, launches, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err and not launches


def test_main_reports_a_missing_model(launches, tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing"), "--device", "cpu"]) == 1
    assert "cannot load the pipeline from" in capsys.readouterr().err and not launches


def test_main_reports_a_taken_port(tiny_pipeline_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--model", str(tiny_pipeline_dir), "--device", "cpu", "--port", str(port)]) == 1
    assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def test_space_app_builds_the_demo(tiny_pipeline_dir, monkeypatch):
    monkeypatch.setenv("DIT4SR_MODEL", str(tiny_pipeline_dir))
    monkeypatch.delenv("DIT4SR_CAPTION_MODEL", raising=False)
    app = runpy.run_path(str(EXAMPLES / "app.py"))  # not as __main__: builds the app without launching it
    assert isinstance(app["demo"], gr.Blocks) and "upscale" in events_by_name(app["demo"])


def test_command_is_installed():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert scripts["dit4sr-demo"].value == "diffusers_dit4sr.cli.demo:main"
