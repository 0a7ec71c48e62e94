# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The library's messages in the words of a command line: the library names its parameters (`` `quantize='int8'` ``,
`` `Captioner(batch_size=1)` ``), a command names its options (`--quantize int8`, `--caption-batch-size 1`).

`CommandLineTerms` makes that translation for one command, from its parser: a parameter is the option whose `dest`
has its name; `PARAMETER_OPTIONS` names the few parameters whose option is called otherwise, and a command adds its
own (`DATASET_OPTIONS`: the training scripts' options for `training.hf_datasets`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

__all__ = ["DATASET_OPTIONS", "PARAMETER_OPTIONS", "CommandLineTerms"]

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
DATASET_OPTIONS = {
    "name": "dataset_name",
    "sources": "dataset_name",
    "config": "dataset_config_name",
    "split": "dataset_split",
    "revision": "dataset_revision",
    "weights": "dataset_weights",
    "max_samples": "max_train_samples",
}
"""How the training scripts name the parameters of `training.hf_datasets` (`DatasetSource`'s fields, `load_training_rows`'
arguments), as Diffusers' training examples name them (`--dataset_name`, `--dataset_config_name`, ...)."""

_PARAMETER = re.compile(r"`(?:(?P<owner>[A-Z]\w*)\()?(?P<name>[a-z_]\w*)(?:=(?P<value>[^`]*?))?(?(owner)\))`")
"""A parameter in a library message: `` `name` ``, `` `name=value` `` or `` `Class(name=value)` ``."""


class CommandLineTerms:
    """Rewrites the parameters a library message names into the options of `parser`.

    Args:
        parser: The command's parser; its options' `dest`s are the parameters they set.
        aliases: This command's parameters whose option's `dest` has another name (parameter -> `dest`), besides
            `PARAMETER_OPTIONS`.
    """

    def __init__(self, parser: argparse.ArgumentParser, aliases: Mapping[str, str] | None = None) -> None:
        self.aliases = {**PARAMETER_OPTIONS, **(aliases or {})}
        self.options: dict[str, str] = {}
        for action in parser._actions:
            if action.option_strings and action.dest != argparse.SUPPRESS:
                self.options[action.dest] = max(action.option_strings, key=len)

    def __call__(self, message: str) -> str:
        """`message` with every parameter of this command replaced by its option (and value); others unchanged."""
        return _PARAMETER.sub(self._option, message)

    def _option(self, match: re.Match[str]) -> str:
        owner, name, value = match.group("owner", "name", "value")
        # The option an alias names, else (for a bare name) the option of the same name.
        dests = [self.aliases.get(f"{owner}.{name}")] if owner else [self.aliases.get(name), name]
        option = next((self.options[dest] for dest in dests if dest in self.options), None)
        if option is None:
            return match.group(0)
        if value is None or value == "True":
            return option
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return f"{option} {value}"
