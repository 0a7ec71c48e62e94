# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-demo`: serve the web page of `diffusers_dit4sr.demo` around one loaded pipeline (and optionally a
captioner) until Ctrl+C.

The options are parsed and checked first, with the model options `dit4sr-upscale` has (`options`); the demo module
(Gradio, torch) is imported after parsing, so that `--help` needs neither. See `docs/demo.md`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..constants import (
    DEFAULT_CAPTION_MODEL,
    DEMO_MAX_FILE_SIZE,
    DEMO_MAX_INPUT_SIDE,
    DEMO_MAX_OUTPUT_SIDE,
    DEMO_QUEUE_SIZE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    MAX_OUTPUT_SIDE,
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
)
from .messages import CommandLineTerms
from .options import add_caption_model_options, add_model_options, model_options

__all__ = ["build_parser", "main", "read_auth_file"]

PROG = "dit4sr-demo"
MEGABYTE = 2**20
SHARE_WARNING = (
    f"{PROG}: warning: --share makes the page public at a gradio.live link: anyone who has the link can run the "
    "model on this machine and upload files to it; pass --auth FILE to ask for a user name and password"
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `dit4sr-demo`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Serve a web page to try DiT4SR super-resolution on your photos. Without --model, the released weights are "
            f"used: {RELEASED_DIT4SR_MODEL} on top of {RELEASED_SD3_MODEL} (gated: accept its license on the Hub and "
            "run `hf auth login` first)."
        ),
        epilog="More: docs/demo.md.",
    )
    model = add_model_options(parser)
    add_caption_model_options(
        model,
        caption_model_help=(
            f"a transformers vision-language model that fills the caption box, e.g. {DEFAULT_CAPTION_MODEL} (the "
            "released captioner); it stays loaded beside the pipeline"
        ),
    )

    server = parser.add_argument_group("server")
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 serves the whole network (default: %(default)s)",
    )
    server.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    server.add_argument(
        "--share",
        action="store_true",
        help=(
            "also serve through a temporary public gradio.live link (needs internet); anyone with the link can use "
            "the page and this machine's GPU: add --auth"
        ),
    )
    server.add_argument(
        "--auth",
        type=Path,
        metavar="FILE",
        help=(
            "ask visitors for a user name and password, from FILE: one USER:PASSWORD a line (# comments); a file, so "
            "that passwords stay out of the shell history and the process list"
        ),
    )
    server.add_argument(
        "--max-input-side",
        type=int,
        metavar="PX",
        default=DEMO_MAX_INPUT_SIDE,
        help="largest input side accepted (default: %(default)s)",
    )
    server.add_argument(
        "--max-output-side",
        type=int,
        metavar="PX",
        default=DEMO_MAX_OUTPUT_SIDE,
        help=f"largest output side made, at most {MAX_OUTPUT_SIDE} (default: %(default)s)",
    )
    server.add_argument(
        "--max-file-size",
        type=int,
        metavar="MB",
        default=DEMO_MAX_FILE_SIZE // MEGABYTE,
        help="largest upload accepted, in megabytes (2**20 bytes); larger ones are refused before they are stored "
        "(default: %(default)s)",
    )
    server.add_argument(
        "--queue-size",
        type=int,
        metavar="N",
        default=DEMO_QUEUE_SIZE,
        help="requests that may wait while one runs; more are turned away (default: %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks when a model cannot be loaded")
    return parser


def check_options(args: argparse.Namespace, device) -> None:
    """Option combinations that cannot work, caught before the slow model loading: a `ValueError` says which."""
    from .. import runtime

    runtime.check_model_options(**model_options(args), device=device)
    if args.caption_8bit:
        if args.caption_model is None:
            raise ValueError("--caption-8bit loads --caption-model in 8 bits on CUDA; it needs both")
        runtime.check_caption_8bit(device)
    if args.max_input_side < 1:
        raise ValueError(f"--max-input-side must be a positive number of pixels, got {args.max_input_side}")
    if not 1 <= args.max_output_side <= MAX_OUTPUT_SIDE:
        raise ValueError(f"--max-output-side must be in [1, {MAX_OUTPUT_SIDE}], got {args.max_output_side}")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {args.port}")
    for option, value in (("--max-file-size", args.max_file_size), ("--queue-size", args.queue_size)):
        if value < 1:
            raise ValueError(f"{option} must be a positive number, got {value}")
    if args.auth is not None:
        read_auth_file(args.auth)


def read_auth_file(path: Path) -> list[tuple[str, str]]:
    """The (user, password) pairs of an `--auth` file.

    Args:
        path: The file: one `USER:PASSWORD` a line, blank lines and `#` comments ignored.

    Raises:
        ValueError: An unreadable file, no pair, or a line that is not one (named by its number, not shown: it may
            hold a password).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--auth {path}: cannot read it: {error}") from None
    credentials = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, separator, password = line.strip().partition(":")
        if not (separator and user and password):
            raise ValueError(f"--auth {path}: line {number} is not USER:PASSWORD")
        credentials.append((user, password))
    if not credentials:
        raise ValueError(f"--auth {path}: no USER:PASSWORD line")
    return credentials


def main(argv: list[str] | None = None) -> int:
    """Runs `dit4sr-demo` with `argv` (default: the process arguments) until interrupted; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    terms = CommandLineTerms(parser)  # the library's parameter names, as this command's options
    try:
        from .. import demo  # noqa: F401 (Gradio, the `demo` extra: missing, it is said before anything loads)
    except ImportError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    from .. import runtime

    try:
        device = runtime.resolve_device(args.device, option="--device")
        check_options(args, device)
    except ValueError as error:
        parser.error(terms(str(error)))  # exits with code 2, like argparse's own errors
    if args.share and args.auth is None:
        print(SHARE_WARNING, file=sys.stderr)
    try:
        with runtime.quiet_libraries(hide_progress_bars=False):
            return serve(args, device, terms)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def serve(args: argparse.Namespace, device, terms: CommandLineTerms) -> int:
    """Loads the captioner (with `--caption-model`) and the pipeline, then serves the page until Ctrl+C; says what
    fails in the command's `terms`."""
    from .. import runtime
    from ..demo import build_demo

    dtype = runtime.resolve_dtype(args.dtype, device)
    hub = runtime.check_hub_access(args.model, *([args.caption_model] if args.caption_model else []))
    captioner = None
    try:
        if args.caption_model is not None:
            print(f"loading the captioner {args.caption_model}", file=sys.stderr)
            captioner = runtime.open_captioner(
                args.caption_model,
                device=device,
                dtype=dtype,
                hub=hub,
                load_in_8bit=args.caption_8bit,
                debug=args.debug,
            )
        print(f"loading the pipeline {args.model or RELEASED_DIT4SR_MODEL}", file=sys.stderr)
        pipe = runtime.open_pipeline(**model_options(args), device=device, hub=hub, debug=args.debug)
    except runtime.LoadError as error:
        print(f"{PROG}: error: {terms(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    demo = build_demo(
        pipe,
        captioner,
        max_input_side=args.max_input_side,
        max_output_side=args.max_output_side,
        max_file_size=args.max_file_size * MEGABYTE,
        queue_size=args.queue_size,
    )
    auth = None if args.auth is None else read_auth_file(args.auth)
    try:
        # Returns on Ctrl+C.
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=auth)
    except OSError as error:  # e.g. the port is taken
        print(f"{PROG}: error: cannot serve on {args.host}:{args.port}: {runtime.one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
