# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-upscale`: upscale image files with a DiT4SR pipeline from the command line.

The options are parsed first (`options`, without torch), then everything that can be checked without a model is
checked (options, inputs, output folders, model folders or ids), so that a bad command line fails at once with exit
code 2. The work is `upscaling.run_jobs`, with the models loaded by `runtime` only if there is work, and progress on
the terminal (`progress`). Started by `accelerate launch` or `torchrun`, the processes split the images between them
and the main one prints the run's summary. See `docs/cli.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..constants import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .messages import CommandLineTerms
from .options import PROG, build_parser, model_options

__all__ = ["UsageError", "main"]


class UsageError(Exception):
    """A command line that cannot run: reported like argparse's own errors, with exit code 2."""


def main(argv: list[str] | None = None) -> int:
    """Runs `dit4sr-upscale` with `argv` (default: the process arguments) and returns the exit code.

    Every process of a multi-process run checks the same things and comes to the same conclusion.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    terms = CommandLineTerms(parser)

    # Parsed: now the libraries (torch, diffusers) are worth their import time.
    if not args.debug:
        from ..backend_logging import quiet_backend_imports

        quiet_backend_imports()
    from .. import runtime, upscaling
    from ..distributed import ONE_PROCESS, Processes

    processes = ONE_PROCESS
    try:
        try:
            processes = Processes.from_environment()
            device = runtime.resolve_device(args.device, processes, option="--device")
            check_options(args, device)
            jobs = upscaling.jobs.plan_jobs(upscaling.jobs.find_images(args.inputs), args.output)
            upscaling.jobs.check_outputs(jobs, args.output, bit_depth=args.bit_depth)
        except ValueError as error:
            raise UsageError(terms(str(error))) from None
        check_models(args)
    except UsageError as error:
        if processes.is_main:  # every process found the same error: one says it
            from .progress import printable

            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: {printable(str(error))}", file=sys.stderr)
        return EXIT_USAGE

    # The other processes report problems only: progress bars and file-by-file lines come from the main one.
    args.quiet = args.quiet or not processes.is_main
    try:
        with runtime.quiet_libraries(hide_progress_bars=args.quiet):
            try:
                processes.join(device)
            except (RuntimeError, ValueError) as error:
                print(f"{PROG}: error: cannot join the other processes: {error}", file=sys.stderr)
                return EXIT_FAILED
            try:
                counts = run(args, jobs, device, processes, terms)
            finally:
                processes.leave()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # Failures of the other processes are in the main process's count; a launcher that saw them fail first could stop
    # the main process before its summary. A lone process that could not load a model has said so in one line; that
    # line is its whole report.
    if not processes.is_main:
        return EXIT_OK
    if processes.several or not counts.stopped:
        print(summary_line(counts, args))
    return EXIT_OK if counts.ok else EXIT_FAILED


def run(args: argparse.Namespace, jobs: list, device, processes, terms: CommandLineTerms):
    """The folder run of the command line: `upscaling.run_jobs` with the models `args` name, loaded by `runtime` only
    if an image needs them (the Hub is asked once whether it can be reached); returns the counts of the whole run.
    The run's messages are shown in the command's terms (`terms`)."""
    from .. import runtime
    from ..upscaling import CaptionSource, UpscaleSettings, run_jobs
    from .progress import TerminalEvents, report

    events = TerminalEvents(quiet=args.quiet, caption_model=args.caption_model, terms=terms)
    hub = None

    def hub_access() -> runtime.HubAccess:
        nonlocal hub
        if hub is None:
            hub = runtime.check_hub_access(args.model, *([args.caption_model] if args.caption_model else []))
        return hub

    def load_pipeline():
        pipe = runtime.open_pipeline(
            **model_options(args),
            device=device,
            hub=hub_access(),
            attention_backend=args.attention_backend,
            fuse_lr_projections=args.fuse_lr_projections,
            compile=args.compile,
            debug=args.debug,
        )
        _note_cache(hub_access(), args.model or "the released pipeline")
        return pipe

    def load_captioner():
        captioner = runtime.open_captioner(
            args.caption_model,
            device=device,
            dtype=runtime.resolve_dtype(args.dtype, device),
            hub=hub_access(),
            debug=args.debug,
            **caption_options(args),
        )
        _note_cache(hub_access(), args.caption_model)
        return captioner

    def _note_cache(hub: runtime.HubAccess, what: str) -> None:
        note = hub.cache_note(what)
        if note is not None and not args.quiet:
            report(note)

    settings = UpscaleSettings(
        scale=args.scale,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        color_fix=args.color_fix,
        process_size=args.process_size,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        tile_batch_size=args.tile_batch_size,
        batch_size=args.batch_size,
        bit_depth=args.bit_depth,
        strip_metadata=args.strip_metadata,
    )
    return run_jobs(
        jobs,
        pipeline=load_pipeline,
        settings=settings,
        captions=CaptionSource(
            prompt=args.prompt,
            captions_dir=args.captions_dir,
            generated=args.caption_model is not None,
            verbatim=args.verbatim_captions,
        ),
        captioner=load_captioner if args.caption_model is not None else None,
        overwrite=args.overwrite,
        processes=processes,
        events=events,
        raise_errors=args.debug,
    )


def caption_options(args: argparse.Namespace) -> dict:
    """The `Captioner` keyword arguments of the `--caption-*` options (the released ones where not given)."""
    options = {"seed": args.seed, "load_in_8bit": args.caption_8bit}
    if args.caption_prompt is not None:
        options["prompt"] = args.caption_prompt
    if args.caption_max_new_tokens is not None:
        options["max_new_tokens"] = args.caption_max_new_tokens
    if args.caption_batch_size is not None:
        options["batch_size"] = args.caption_batch_size
    return options


def summary_line(counts, args: argparse.Namespace) -> str:
    line = f"{counts.upscaled} upscaled, {counts.skipped} skipped (exist), {counts.failed} failed"
    if args.caption_model is not None:
        captions = counts.captions
        line += f"; captions: {captions.written} new, {captions.reused} reused, {captions.failed} failed"
    return line


def check_options(args: argparse.Namespace, device) -> None:
    """Option combinations that cannot work (or do not help), caught before the slow model loading; a `ValueError`
    or `UsageError` says which."""
    from .. import runtime
    from .progress import report

    runtime.check_model_options(**model_options(args), device=device)
    if args.fuse_lr_projections and model_options(args)["quantize"] is not None:
        raise UsageError("--fuse-lr-projections folds full-precision weights; it cannot be combined with --quantize")
    if args.tile_overlap >= args.tile_size:
        raise UsageError(f"--tile-overlap ({args.tile_overlap}) must be smaller than --tile-size ({args.tile_size})")
    runtime.check_attention_backend(args.attention_backend)
    if args.captions_dir is not None:
        if not args.captions_dir.exists():
            raise UsageError(f"--captions-dir {args.captions_dir}: no such folder")
        if not args.captions_dir.is_dir():
            raise UsageError(f"--captions-dir {args.captions_dir}: a file, not a folder of <name>.txt captions")
        if not os.access(args.captions_dir, os.R_OK | os.X_OK):
            raise UsageError(f"--captions-dir {args.captions_dir}: cannot read this folder (permission denied)")
    check_caption_options(args, device)
    if args.dtype == "fp16" and device.type == "cpu":
        report("warning: fp16 on the CPU is slow (CPUs lack fp16 arithmetic) and gains nothing; use fp32 or bf16")


def check_caption_options(args: argparse.Namespace, device) -> None:
    """The `--caption-*` options need `--caption-model`, which excludes `--prompt`; `--verbatim-captions` needs
    caption files."""
    from .. import runtime

    if args.verbatim_captions and args.captions_dir is None and args.caption_model is None:
        raise UsageError("--verbatim-captions applies to caption files; it needs --captions-dir or --caption-model")
    if args.caption_model is None:
        caption_options = {
            "--caption-prompt": args.caption_prompt is not None,
            "--caption-max-new-tokens": args.caption_max_new_tokens is not None,
            "--caption-batch-size": args.caption_batch_size is not None,
            "--caption-8bit": args.caption_8bit,
        }
        for option, given in caption_options.items():
            if given:
                raise UsageError(f"{option} sets up --caption-model; it needs --caption-model")
        return
    if args.prompt is not None:
        raise UsageError("--prompt gives every image the same caption; it cannot be combined with --caption-model")
    if args.caption_prompt is not None and not args.caption_prompt.strip():
        raise UsageError("--caption-prompt must not be empty")
    if args.caption_8bit:
        runtime.check_caption_8bit(device)


def check_models(args: argparse.Namespace) -> None:
    """`--model` and `--caption-model` name an existing folder of the right kind, or a well-formed Hub id."""
    if args.model is not None:
        _check_model_source(
            "--model", args.model, "model_index.json", "a pipeline folder written by `save_pretrained`"
        )
    if args.caption_model is not None:
        _check_model_source("--caption-model", args.caption_model, "config.json", "a transformers model folder")


def _check_model_source(option: str, value: str, required_file: str, kind: str) -> None:
    import huggingface_hub.utils
    from huggingface_hub.errors import HFValidationError

    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {value}: a file; pass {kind} or a Hub id")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"{option} {value}: cannot read this folder (permission denied)")
        if not (path / required_file).is_file():
            raise UsageError(f"{option} {value}: this folder has no {required_file}, so it is not {kind}")
        try:
            index = json.loads((path / required_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"{option} {value}: cannot read {required_file}: {error}") from None
        if not isinstance(index, dict) or (required_file == "model_index.json" and "_class_name" not in index):
            raise UsageError(f"{option} {value}: {required_file} is not the index of {kind}")
        if option == "--model":
            _check_no_pickle_only(value)
        return
    try:
        huggingface_hub.utils.validate_repo_id(value)
    except HFValidationError:
        raise UsageError(f"{option} {value}: no such folder, and not a Hub id (namespace/name) either") from None


def _check_no_pickle_only(value: str) -> None:
    """A local pipeline folder must hold safetensors: the pipeline refuses pickle weights (`safe_loading`), and this
    says so before anything loads, with the command that converts them."""
    from ..safe_loading import PICKLE_RISK, pickle_only_weights

    pickles = pickle_only_weights(value)
    if pickles:
        convert = (
            f"from diffusers_dit4sr import StableDiffusion3SRPipeline as P; "
            f"P.from_pretrained({value!r}, allow_pickle=True).save_pretrained({value + '-safetensors'!r})"
        )
        raise UsageError(
            f"--model {value}: its weights are pickle files only ({', '.join(map(str, pickles))}), {PICKLE_RISK}. If "
            f'you trust where they came from, convert them to safetensors once: python -c "{convert}"'
        )
