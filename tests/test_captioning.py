# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`diffusers_dit4sr.captioning`: the released sentence filter, and `Captioner` on the tiny LLaVA model (offline)."""

import weakref
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_dit4sr.captioning import (
    DEFAULT_CAPTION_MAX_NEW_TOKENS,
    DEFAULT_CAPTION_PROMPT,
    FOCUS_WORDS,
    Captioner,
    remove_focus_sentences,
)
from diffusers_dit4sr.tiny import save_tiny_captioner

from .utils import pretend_installed

MAX_NEW_TOKENS = 12
"""The tiny model's random text rarely ends by itself: a short budget keeps every caption fast."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"))


@pytest.fixture
def make_captioner(model_dir):
    def make(**options) -> Captioner:
        return Captioner(model_dir, **{"max_new_tokens": MAX_NEW_TOKENS, "device": "cpu", **options})

    return make


def random_image(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


IMAGES = [random_image(64, 64, seed=0), random_image(50, 30, seed=1), random_image(20, 70, seed=2)]


# --- The released sentence filter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A cat. The background is blurred! Is it in focus? A red car.", "A cat. A red car."),
        ("a cat sitting on a sofa", "a cat sitting on a sofa"),  # no punctuation: one sentence, kept
        ("a blurry cat sitting on a sofa", ""),  # no punctuation: one sentence, dropped
        ("A dog. It sits on the grass", "A dog. It sits on the grass"),  # trailing text without punctuation, kept
        ("A dog. It sits in the focal plane", "A dog."),  # ... and dropped
        ("FOCUSED shot. A Close-Up view! A DEPTH map? A tree.", "A tree."),  # case-insensitive substrings
        ("A photo in black and white. A black and a white cat.", "A black and a white cat."),  # the whole phrase
        ("Dense fog... A house?!", ".. A house?!"),  # every mark ends a sentence, empty ones included
        ("  A cat.  Two  spaces.\nA new line.  ", "A cat.  Two  spaces.\nA new line."),  # inner whitespace kept
        ("The cup is located left. It is positioned well.", ""),
        ("", ""),
    ],
)
def test_remove_focus_sentences(text, expected):
    assert remove_focus_sentences(text) == expected


@pytest.mark.parametrize("word", FOCUS_WORDS)
def test_every_released_word_drops_its_sentence(word):
    assert remove_focus_sentences(f"A cat. It is {word.upper()} here. A dog.") == "A cat. A dog."


def test_remove_focus_sentences_is_idempotent():
    """A caption the filter already cleaned (as `Captioner` writes them) is left as it is when read back."""
    rng = np.random.default_rng(0)
    pieces = [
        "A red car", "It is located near a tree", "The FOCUS is soft", "Two cups", " and a close-up", "a dense crowd",
        "the sign reads OPEN", "", " ", "\n", "black and white tiles", "a positioned lamp", "a bird",
    ]  # fmt: skip
    marks = [".", "?", "!", "...", "?!", "", " ", "\n"]
    for _ in range(500):
        text = "".join(rng.choice(pieces) + rng.choice(marks) for _ in range(rng.integers(0, 8)))
        once = remove_focus_sentences(text)
        assert remove_focus_sentences(once) == once, text


def test_released_settings():
    assert DEFAULT_CAPTION_PROMPT.startswith("Please describe the actual objects in the image in a very detailed")
    assert DEFAULT_CAPTION_PROMPT.endswith("Please do not include descriptions like the background is blurred.")
    assert DEFAULT_CAPTION_MAX_NEW_TOKENS == 512
    assert len(FOCUS_WORDS) == 10 and "black and white" in FOCUS_WORDS


# --- Captioner -------------------------------------------------------------------------------------------------


def test_captions_are_seeded_and_leave_the_global_rng_alone(make_captioner):
    captioner = make_captioner(seed=3)
    state = torch.get_rng_state()
    first = captioner(IMAGES[0])
    assert torch.equal(torch.get_rng_state(), state)

    assert len(first) == 1 and isinstance(first[0], str) and first[0]
    assert captioner(IMAGES[0]) == first  # reseeded for every batch
    assert make_captioner(seed=3)(IMAGES[0]) == first  # and from a fresh load
    assert make_captioner(seed=4)(IMAGES[0]) != first
    # One image per batch: a caption does not depend on the other images.
    assert captioner([IMAGES[1], IMAGES[0]])[1] == first[0]


def test_batches_of_images_of_different_sizes(make_captioner):
    greedy_batched = make_captioner(temperature=0.0, batch_size=3)(IMAGES)
    greedy_alone = [make_captioner(temperature=0.0)(image)[0] for image in IMAGES]
    assert len(greedy_batched) == 3 and all(greedy_batched)
    assert greedy_batched == greedy_alone  # rows stay in order and in step with their prompts

    sampled = make_captioner(batch_size=2)
    captions = sampled(IMAGES)
    assert len(captions) == 3 and captions == sampled(IMAGES)  # batches (0, 1) and (2,), each seeded
    assert captions[2] == sampled(IMAGES[2])[0]
    assert sampled([]) == []


def test_a_greedy_caption_is_the_models_continuation_of_the_chat_prompt(make_captioner):
    captioner = make_captioner(temperature=0.0, prompt="Describe.")
    model, processor = captioner.model, captioner.processor
    inputs = processor(images=[IMAGES[1]], text=["USER: <image>\nDescribe. ASSISTANT:"], return_tensors="pt")
    with torch.no_grad():
        tokens = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_tokens = tokens[0, inputs["input_ids"].shape[1] :]
    assert captioner(IMAGES[1]) == [processor.decode(new_tokens, skip_special_tokens=True).strip()]


def test_decoder_only_models_pad_on_the_left(make_captioner):
    assert make_captioner().processor.tokenizer.padding_side == "left"


def test_the_chat_template_holds_the_image_and_the_prompt(make_captioner, monkeypatch):
    captioner = make_captioner(prompt="Describe the photo.")
    texts = []
    original_call = type(captioner.processor).__call__

    def spy(self, images=None, text=None, **kwargs):
        texts.append(text)
        return original_call(self, images=images, text=text, **kwargs)

    monkeypatch.setattr(type(captioner.processor), "__call__", spy)
    captioner(IMAGES[:2])
    assert texts == [["USER: <image>\nDescribe the photo. ASSISTANT:"]] * 2

    captioner = make_captioner(prompt="<image>\nDescribe.")
    captioner.processor.chat_template = None  # a model without a template gets the prompt as it is
    assert captioner(IMAGES[0])[0]
    assert texts[-1] == ["<image>\nDescribe."]


@pytest.mark.parametrize("filter_focus_sentences", [True, False])
def test_captions_are_filtered_by_default(make_captioner, monkeypatch, filter_focus_sentences):
    captioner = make_captioner(filter_focus_sentences=filter_focus_sentences)
    generated = " A cat on a rug. The background is blurred. A lamp. "
    monkeypatch.setattr(captioner.processor, "batch_decode", lambda tokens, **kwargs: [generated] * len(tokens))
    expected = "A cat on a rug. A lamp." if filter_focus_sentences else generated.strip()
    assert captioner(IMAGES[:2]) == [expected, expected]
    assert Captioner.__init__.__kwdefaults__["filter_focus_sentences"] is True


def test_unload_frees_the_model(make_captioner):
    captioner = make_captioner()
    model = weakref.ref(captioner.model)
    captioner.unload()
    assert model() is None and captioner.model is None and captioner.processor is None
    with pytest.raises(RuntimeError, match="unloaded"):
        captioner(IMAGES[0])

    with make_captioner() as captioner:
        model = weakref.ref(captioner.model)
        assert captioner(IMAGES[0])
    assert model() is None


def test_images_must_be_pil_images(make_captioner):
    with pytest.raises(TypeError, match="images must be PIL images, got a ndarray"):
        make_captioner()([np.zeros((8, 8, 3), dtype=np.uint8)])


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"model_name_or_path": None}, TypeError, "model_name_or_path"),
        ({"model_name_or_path": ""}, TypeError, "model_name_or_path"),
        ({"prompt": " "}, ValueError, "prompt"),
        ({"prompt": None}, TypeError, "prompt"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, TypeError, "max_new_tokens"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"temperature": -0.1}, ValueError, "temperature"),
        ({"temperature": "hot"}, TypeError, "temperature"),
        ({"top_p": 0}, ValueError, "top_p"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"seed": "1"}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"filter_focus_sentences": "yes"}, TypeError, "filter_focus_sentences"),
        ({"dtype": "bf16"}, TypeError, "dtype"),
        ({"device": "gpu"}, ValueError, "device"),
        ({"device": 0}, TypeError, "device"),
        ({"device": "cpu", "load_in_8bit": True}, ValueError, "load_in_8bit"),
    ],
)
def test_bad_arguments_are_named_before_loading(tmp_path, options, error, message):
    # The folder does not exist: loading would fail with an OSError instead.
    with pytest.raises(error, match=message):
        Captioner(**{"model_name_or_path": tmp_path / "not-loaded", **options})


def test_cuda_device_must_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        Captioner(tmp_path / "not-loaded", device="cuda")


def test_8bit_needs_bitsandbytes(tmp_path, monkeypatch):
    pretend_installed(monkeypatch, "bitsandbytes", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # cuda:0 exists
    with pytest.raises(ImportError, match="load_in_8bit=True needs the bitsandbytes package"):
        Captioner(tmp_path / "not-loaded", device="cuda:0", load_in_8bit=True)
