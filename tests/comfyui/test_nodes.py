# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The node pack in a real ComfyUI (`conftest.py` starts it), through its HTTP API and websocket, on the tiny
pipeline: discovery, workflows (one image, a batch with a mask), progress, interrupt, errors, caching, ComfyUI's
model management and the global RNG. Prompts are few and small (a tiny-pipeline step still costs a second here)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_dit4sr.image_processing import pil_bicubic_resize

from .server import REPOSITORY, TINY_PIPELINE, error_message

pytestmark = pytest.mark.slow

EXAMPLE_API = REPOSITORY / "comfyui" / "example_workflows" / "api" / "dit4sr_upscale.json"
SAMPLE = REPOSITORY / "assets" / "sample_lr.png"
PHOTO_SIZE = (40, 30)  # width, height: small, odd and not square


def load_image(name: str) -> dict:
    return {"class_type": "LoadImage", "inputs": {"image": name}}


def loader(model: str = TINY_PIPELINE, **options) -> dict:
    inputs = {"model": model, "variant": "q", "dtype": "auto", "quantization": "none", "offload": "auto"}
    return {"class_type": "DiT4SRLoader", "inputs": {**inputs, **options}}


def upscale(image=("image", 0), **inputs) -> dict:
    defaults = {"pipeline": ["loader", 0], "image": list(image), "prompt": "", "scale_by": 2.0, "steps": 1, "seed": 0}
    return {"class_type": "DiT4SRUpscale", "inputs": {**defaults, **inputs}}


def save(images, prefix: str) -> dict:
    return {"class_type": "SaveImage", "inputs": {"images": list(images), "filename_prefix": prefix}}


def probe(**inputs) -> dict:
    return {"class_type": "DiT4SRTestProbe", "inputs": {"unload_models": False, **inputs}}


def probe_report(entry: dict, node: str = "probe") -> dict:
    assert entry["status"]["status_str"] == "success", entry["status"]
    return json.loads(entry["outputs"][node]["text"][0])


def saved_images(comfyui, entry: dict, node: str = "save") -> list[np.ndarray]:
    assert entry["status"]["status_str"] == "success", entry["status"]
    return [np.asarray(PIL.Image.open(comfyui.output_file(image))) for image in entry["outputs"][node]["images"]]


def events_of(receive, prompt_id: str) -> list[dict]:
    """The websocket messages of one prompt, up to its end (success, error or interrupt)."""
    events = []
    while True:
        message = receive()
        if message.get("data", {}).get("prompt_id") != prompt_id:
            continue
        events.append(message)
        if message["type"] in ("execution_success", "execution_error", "execution_interrupted"):
            return events


def progress_values(events: list[dict], node: str) -> list[tuple[int, int]]:
    return [
        (e["data"]["value"], e["data"]["max"]) for e in events if e["type"] == "progress" and e["data"]["node"] == node
    ]


@pytest.fixture(scope="module")
def photo(comfyui) -> str:
    """A small RGB photo in ComfyUI's input folder: red on the left, grey on the right, with some noise."""
    generator = np.random.default_rng(0)
    pixels = generator.integers(0, 60, size=(PHOTO_SIZE[1], PHOTO_SIZE[0], 3)).astype(np.uint8)
    pixels[:, : PHOTO_SIZE[0] // 2, 0] += 180
    pixels[:, PHOTO_SIZE[0] // 2 :] += 100
    return comfyui.upload(PIL.Image.fromarray(pixels), "dit4sr_photo.png")


@pytest.fixture(scope="module")
def single_run(comfyui, photo) -> dict:
    """The photo upscaled x2 in one step (seed 0), with a probe of the pipeline afterwards: the reference of the
    batch and cache tests."""
    graph = {
        "image": load_image(photo),
        "loader": loader(),
        "upscale": upscale(),
        "save": save(["upscale", 0], "single"),
        "probe": probe(pipeline=["loader", 0], image=["upscale", 0]),
    }
    return comfyui.run(graph)


def test_nodes_are_discovered_with_their_schemas(comfyui):
    assert "(IMPORT FAILED)" not in comfyui.log.read_text()
    assert comfyui.get("/workflow_templates")["dit4sr"] == ["dit4sr_upscale"]  # the API format is kept out
    loader_info = comfyui.get("/object_info/DiT4SRLoader")["DiT4SRLoader"]
    upscale_info = comfyui.get("/object_info/DiT4SRUpscale")["DiT4SRUpscale"]

    assert loader_info["output"] == ["DIT4SR_PIPELINE"]
    assert list(loader_info["input"]["required"]) == ["model", "variant", "dtype", "quantization", "offload"]
    assert "optional" not in loader_info["input"]
    required = loader_info["input"]["required"]
    assert required["model"][1]["options"] == ["acceptee/DiT4SR (released)", TINY_PIPELINE]
    assert required["variant"][1]["options"] == ["q", "f", "r1"] and required["variant"][1]["default"] == "q"
    assert required["dtype"][1]["options"] == ["auto", "bf16", "fp16", "fp32"]
    assert required["quantization"][1]["options"] == ["none", "int8", "float8", "int8-quanto", "nf4-t5"]
    assert required["offload"][1]["options"] == ["auto", "none", "model"]

    assert upscale_info["output"] == ["IMAGE", "MASK"]
    required, optional = upscale_info["input"]["required"], upscale_info["input"]["optional"]
    assert list(required) == ["pipeline", "image", "prompt", "scale_by", "steps", "seed"]
    assert list(optional) == ["guidance", "color_fix", "tile_size", "lr_injection_scale", "mask"]
    assert required["pipeline"][0] == "DIT4SR_PIPELINE" and required["image"][0] == "IMAGE"
    assert optional["mask"][0] == "MASK"
    assert required["prompt"][1]["multiline"] is True and required["prompt"][1]["default"] == ""
    assert {key: required["scale_by"][1][key] for key in ("default", "min", "max")} == {
        "default": 4.0,
        "min": 1.0,
        "max": 16.0,
    }
    assert required["steps"][1]["default"] == 40 and required["steps"][1]["min"] == 1
    assert required["seed"][1]["max"] == 2**64 - 1 and required["seed"][1]["control_after_generate"] is True
    released = {"guidance": 8.0, "color_fix": "adain", "tile_size": 512, "lr_injection_scale": 1.2}
    assert {name: optional[name][1]["default"] for name in released} == released
    assert optional["tile_size"][1]["step"] == 16
    for info in (loader_info, upscale_info):
        for name, spec in {**info["input"]["required"], **info["input"].get("optional", {})}.items():
            assert len(spec[1].get("tooltip", "")) > 20, f"{info['name']}.{name} has no tooltip"


def test_the_node_gives_the_librarys_result(comfyui, photo, single_run):
    """The same photo, settings and seed through the library in this process (as `dit4sr-upscale` seeds it)."""
    from diffusers_dit4sr import StableDiffusion3SRPipeline

    pipe = StableDiffusion3SRPipeline.from_pretrained(comfyui.base / "models" / "diffusers" / TINY_PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        image=PIL.Image.open(comfyui.base / "input" / photo),
        upscale=2.0,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    (image,) = saved_images(comfyui, single_run)
    assert np.abs(image.astype(int) - (expected * 255).round().astype(int)).max() <= 1


def test_upscale_saves_the_scaled_image_with_progress_and_leaves_the_global_rng_alone(comfyui, photo):
    """A pipeline loaded and run between two probes of the global torch RNG (its own loader inputs, so that it
    loads within the bracket); the websocket counts the progress events."""
    before = probe_report(comfyui.run({"probe": probe()}))
    graph = {
        "image": load_image(photo),
        "loader": loader(dtype="fp32"),
        "upscale": upscale(scale_by=2.5, steps=2),
        "save": save(["upscale", 0], "rng"),
    }
    with comfyui.websocket() as receive:
        prompt_id = comfyui.queue(graph)
        events = events_of(receive, prompt_id)
    entry = comfyui.wait(prompt_id)
    after = probe_report(comfyui.run({"probe": probe()}))

    (image,) = saved_images(comfyui, entry)
    assert image.shape == (75, 100, 3)  # round(2.5 x 30), round(2.5 x 40)
    assert progress_values(events, "upscale") == [(1, 2), (2, 2)]
    assert after["rng"] == before["rng"]


def test_the_pipeline_is_cached_lent_to_comfyui_and_only_the_upscale_reruns(comfyui, photo, single_run):
    report = probe_report(single_run)
    assert report["device"] == "cpu"  # --cpu: ComfyUI's device
    assert report["pipeline"]["device"] == report["pipeline"]["transformer_device"] == "cpu"
    assert report["pipeline"]["dtype"] == "torch.float32"  # auto: ComfyUI's choice for the CPU
    assert report["pipeline"]["registered"] and "PipelineModels" in report["loaded_models"]
    assert report["pipeline"]["offload"] is False
    assert report["pipeline"]["repr"] == f"DiT4SR pipeline '{TINY_PIPELINE}' on cpu (ComfyUI's model management)"

    # What ComfyUI does when another node needs the room: it unloads our models, and takes them back later.
    unloaded = probe_report(
        comfyui.run({"loader": loader(), "probe": probe(unload_models=True, pipeline=["loader", 0])})
    )
    assert not unloaded["pipeline"]["registered"] and unloaded["loaded_models"] == []

    graph = {
        "image": load_image(photo),
        "loader": loader(),
        "upscale": upscale(seed=1),
        "save": save(["upscale", 0], "seed1"),
        "probe": probe(pipeline=["loader", 0], image=["upscale", 0]),
    }
    with comfyui.websocket() as receive:
        prompt_id = comfyui.queue(graph)
        events = events_of(receive, prompt_id)
    entry = comfyui.wait(prompt_id)
    cached = next(event["data"]["nodes"] for event in events if event["type"] == "execution_cached")
    executed = {event["data"]["node"] for event in events if event["type"] == "executing"}
    assert "loader" in cached and "loader" not in executed  # the pipeline is not loaded again
    assert "upscale" in executed
    assert probe_report(entry)["pipeline"]["registered"]
    (seed0,), (seed1,) = saved_images(comfyui, single_run), saved_images(comfyui, entry)
    assert seed0.shape == seed1.shape == (60, 80, 3) and not np.array_equal(seed0, seed1)

    # The same inputs again (another file name): nothing reruns but the saving.
    graph["save"] = save(["upscale", 0], "seed1-again")
    with comfyui.websocket() as receive:
        prompt_id = comfyui.queue(graph)
        events = events_of(receive, prompt_id)
    cached = next(event["data"]["nodes"] for event in events if event["type"] == "execution_cached")
    assert {"image", "loader", "upscale"} <= set(cached)
    (again,) = saved_images(comfyui, comfyui.wait(prompt_id))
    assert np.array_equal(again, seed1)


def test_a_batch_keeps_its_order_and_each_image_its_single_result_with_the_mask(comfyui, photo, single_run):
    width, height = PHOTO_SIZE
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[..., 2] = 200  # blue
    rgba[..., 3] = np.linspace(0, 255, width).round().astype(np.uint8)[None]  # alpha: a ramp left to right
    second = comfyui.upload(PIL.Image.fromarray(rgba, "RGBA"), "dit4sr_rgba.png")
    graph = {
        "image": load_image(photo),
        "second": load_image(second),
        "batch": {"class_type": "ImageBatch", "inputs": {"image1": ["image", 0], "image2": ["second", 0]}},
        "loader": loader(),
        "upscale": upscale(image=("batch", 0), mask=["second", 1]),
        "save": save(["upscale", 0], "batch"),
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["upscale", 1]}},
        "save_mask": save(["mask_image", 0], "batch-mask"),
    }
    with comfyui.websocket() as receive:
        prompt_id = comfyui.queue(graph)
        events = events_of(receive, prompt_id)
    entry = comfyui.wait(prompt_id)

    first, blue = saved_images(comfyui, entry)
    (single,) = saved_images(comfyui, single_run)
    assert first.shape == blue.shape == (2 * height, 2 * width, 3)
    assert progress_values(events, "upscale") == [(1, 1)]  # one step, for both images
    # Each image is seeded afresh: the first equals the photo upscaled alone (8-bit rounding aside).
    assert np.abs(first.astype(int) - single.astype(int)).max() <= 1
    assert blue[..., 2].mean() > blue[..., 0].mean() + 50  # the colour fix keeps the blue image blue
    (mask,) = saved_images(comfyui, entry, "save_mask")
    # LoadImage's mask is 1 - alpha, upscaled with the pipeline's bicubic kernel.
    expected = pil_bicubic_resize(1 - torch.from_numpy(rgba[..., 3] / 255.0)[None, None].float(), (60, 80))[0, 0]
    assert mask.shape == (60, 80, 3)
    assert np.abs(mask[..., 0].astype(int) - (expected.numpy() * 255).round().astype(int)).max() <= 1


def test_interrupt_stops_within_a_step_without_an_image_and_the_server_goes_on(comfyui, photo):
    graph = {
        "image": load_image(photo),
        "loader": loader(),
        "upscale": upscale(steps=60, seed=3),
        "save": save(["upscale", 0], "interrupted"),
    }
    with comfyui.websocket() as receive:
        prompt_id = comfyui.queue(graph)
        while True:
            message = receive()
            if message["type"] == "progress" and message["data"].get("prompt_id") == prompt_id:
                break
        status, _ = comfyui.post("/interrupt", {"prompt_id": prompt_id})
        assert status == 200
        events = events_of(receive, prompt_id)
    entry = comfyui.wait(prompt_id)

    assert events[-1]["type"] == "execution_interrupted"
    assert events[-1]["data"]["node_id"] == "upscale"
    assert len(progress_values(events, "upscale")) <= 1  # the step under way when the interrupt came, at most
    assert "save" not in entry["outputs"]
    assert not list((comfyui.base / "output").glob("interrupted*"))
    report = probe_report(comfyui.run({"loader": loader(), "probe": probe(pipeline=["loader", 0])}))
    assert report["pipeline"]["name"] == TINY_PIPELINE


def test_bad_inputs_are_refused_in_one_line_naming_the_input_and_the_next_prompt_runs(comfyui, photo):
    wide = comfyui.upload(PIL.Image.new("RGB", (2100, 16), (90, 120, 150)), "dit4sr_wide.png")

    def failure(**graph) -> str:
        message = error_message(comfyui.run(graph)).strip()
        assert "\n" not in message
        return message

    message = failure(
        image=load_image(wide), loader=loader(), upscale=upscale(scale_by=8.0), save=save(["upscale", 0], "wide")
    )
    assert "16800x128 px output" in message and "lower `scale_by`" in message

    message = failure(
        image=load_image(photo), loader=loader(), upscale=upscale(tile_size=500), save=save(["upscale", 0], "t")
    )
    assert message == "`tile_size` must be a positive multiple of 16 pixels, got 500."

    solid = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    message = failure(
        image=load_image(photo),
        solid=solid,
        loader=loader(),
        upscale=upscale(mask=["solid", 0]),
        save=save(["upscale", 0], "m"),
    )
    assert message == "mask: must have the image's size, 40x30 px, got 64x64 px"

    message = failure(loader=loader(quantization="nf4-t5"), probe=probe(pipeline=["loader", 0]))
    assert message.startswith("quantization nf4-t5: ") and ("CUDA" in message or "bitsandbytes" in message)

    # What ComfyUI's validation catches (with the nodes' own `validate_inputs`): nothing runs, HTTP 400 names the
    # node and the input.
    upscaling = {"image": load_image(photo), "loader": loader(), "save": save(["upscale", 0], "x")}
    for node, graph, details in (
        ("loader", {"loader": loader(model="none-such"), "probe": probe(pipeline=["loader", 0])}, "model 'none-such'"),
        ("loader", {"loader": loader(offload="cpu"), "probe": probe(pipeline=["loader", 0])}, "offload 'cpu'"),
        ("upscale", {**upscaling, "upscale": upscale(steps=0)}, "steps"),
        ("upscale", {**upscaling, "upscale": upscale(scale_by=0.5)}, "scale_by"),
        ("upscale", {**upscaling, "upscale": upscale(color_fix="histogram")}, "color_fix 'histogram'"),
    ):
        status, answer = comfyui.post("/prompt", {"prompt": graph, "client_id": comfyui.client_id})
        assert status == 400 and node in answer["node_errors"], answer
        assert details in answer["node_errors"][node]["errors"][0]["details"], answer

    assert probe_report(comfyui.run({"loader": loader(), "probe": probe(pipeline=["loader", 0])}))["pipeline"]


def test_the_example_workflow_runs_as_shipped_once_the_released_weights_are_in_place(comfyui):
    """The shipped API-format example names the released weights. Offline (HF_HUB_OFFLINE=1) and without them, the
    error says where to put them and how; with the tiny pipeline laid out as the released folders are, it runs."""
    graph = json.loads(EXAMPLE_API.read_text())
    (input_name,) = [node["inputs"]["image"] for node in graph.values() if node["class_type"] == "LoadImage"]
    # A square crop: its x4 output is one 512 px tile, so that the shipped 40 steps take seconds on the tiny pipeline.
    sample = PIL.Image.open(SAMPLE)
    comfyui.upload(sample.crop((0, 0, sample.height, sample.height)), input_name)
    models = comfyui.base / "models" / "diffusers"

    message = error_message(comfyui.run(graph))
    assert "HF_HUB_OFFLINE=1 is set" in message
    assert (
        f"put its files into {models / 'stable-diffusion-3.5-medium'} and {models / 'DiT4SR/dit4sr_q/transformer'}"
        in message
    )
    assert 'hf download stabilityai/stable-diffusion-3.5-medium --include "model_index.json"' in message

    # The released layout: SD3.5-medium's folder (its index naming SD3's pipeline) and DiT4SR's transformer.
    tiny = models / TINY_PIPELINE
    shutil.copytree(tiny, models / "stable-diffusion-3.5-medium", ignore=shutil.ignore_patterns("transformer"))
    index = json.loads((models / "stable-diffusion-3.5-medium" / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusion3Pipeline"
    (models / "stable-diffusion-3.5-medium" / "model_index.json").write_text(json.dumps(index))
    shutil.copytree(tiny / "transformer", models / "DiT4SR" / "dit4sr_q" / "transformer")
    model_choices = comfyui.get("/object_info/DiT4SRLoader")["DiT4SRLoader"]["input"]["required"]["model"][1]
    assert model_choices["options"] == ["acceptee/DiT4SR (released)", TINY_PIPELINE]

    entry = comfyui.run(graph)
    save_node = next(name for name, node in graph.items() if node["class_type"] == "SaveImage")
    (image,) = saved_images(comfyui, entry, save_node)
    assert image.shape == (4 * sample.height, 4 * sample.height, 3)
