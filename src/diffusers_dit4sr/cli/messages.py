# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The library's messages in the words of a command line: the library names its parameters (`` `quantize='int8'` ``,
`` `Captioner(batch_size=1)` ``), a command names its options (`--quantize int8`, `--caption-batch-size 1`).

`CommandLineTerms` makes that translation for one command, from its parser: a parameter is the option whose `dest`
has its name, and `PARAMETER_OPTIONS` names the few parameters whose option is called otherwise.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["PARAMETER_OPTIONS", "CommandLineTerms"]

PARAMETER_OPTIONS = {
    "Captioner.model": "caption_model",
    "Captioner.load_in_8bit": "caption_8bit",
    "Captioner.batch_size": "caption_batch_size",
    "Captioner.prompt": "caption_prompt",
    "Captioner.max_new_tokens": "caption_max_new_tokens",
    "pretrained_model_path": "weights",
}
"""Library parameters (`Class.parameter` where the bare name would be ambiguous) and the `dest` of the option that
sets them, where the two names differ."""

_PARAMETER = re.compile(r"`(?:(?P<owner>[A-Z]\w*)\()?(?P<name>[a-z_]\w*)(?:=(?P<value>[^`]*?))?(?(owner)\))`")
"""A parameter in a library message: `` `name` ``, `` `name=value` `` or `` `Class(name=value)` ``."""


class CommandLineTerms:
    """Rewrites the parameters a library message names into the options of `parser`.

    Args:
        parser: The command's parser; its options' `dest`s are the parameters they set.
    """

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.options: dict[str, str] = {}
        for action in parser._actions:
            if action.option_strings and action.dest != argparse.SUPPRESS:
                self.options[action.dest] = max(action.option_strings, key=len)

    def __call__(self, message: str) -> str:
        """`message` with every parameter of this command replaced by its option (and value); others unchanged."""
        return _PARAMETER.sub(self._option, message)

    def _option(self, match: re.Match[str]) -> str:
        owner, name, value = match.group("owner", "name", "value")
        qualified = f"{owner}.{name}" if owner else name
        dest = PARAMETER_OPTIONS.get(qualified, PARAMETER_OPTIONS.get(name, name) if not owner else None)
        option = self.options.get(dest) if dest is not None else None
        if option is None:
            return match.group(0)
        if value is None or value == "True":
            return option
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return f"{option} {value}"
