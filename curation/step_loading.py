"""The user's cleaning steps by name: `module:Class` and keyword arguments, from a command line or a YAML file.

On the command line, `module:Class` or `module:Class:{"min_words": 50}` (the arguments as a JSON object).
In a YAML file, a list of `{step: module:Class, args: {...}}`:

    - step: examples.custom_step:MinWords
      args: {min_words: 50}

The module must be importable wherever the steps run (Ray workers included): on `PYTHONPATH`, or
installed. A class that is not a `curation.steps.Step`, arguments it does not take, or a module that
cannot be imported are the user's to fix (`UserError`).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from curation.errors import UserError
from curation.steps import Step


def load_step(target: str, args: Mapping[str, Any] | None = None) -> Step[Any]:
    """An instance of the step class `target` (`module:Class`) built with `args`."""
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name.isidentifier():
        raise UserError(f"a step is module:Class, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"step {target}: cannot import {module_name} ({error}); is it on PYTHONPATH?") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Step)):
        raise UserError(f"step {target}: {module_name} has no Step subclass named {class_name}")
    try:
        return cls(**dict(args or {}))
    except TypeError as error:
        raise UserError(f"step {target}: bad arguments {dict(args or {})} ({error})") from None


def parse_step(text: str) -> Step[Any]:
    """A step from `module:Class` or `module:Class:{json object of keyword arguments}`."""
    module_name, _, rest = text.partition(":")
    class_name, sep, arguments = rest.partition(":")
    args: Any = {}
    if sep:
        try:
            args = json.loads(arguments)
        except ValueError as error:
            raise UserError(f"step {module_name}:{class_name}: arguments are not JSON ({error})") from None
        if not isinstance(args, dict):
            raise UserError(f"step {module_name}:{class_name}: arguments must be a JSON object, got {arguments}")
    return load_step(f"{module_name}:{class_name}", args)


def load_steps_file(path: Path) -> list[Step[Any]]:
    """The steps a YAML file lists, in its order."""
    try:
        entries = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"steps file {path}: {error}".splitlines()[0]) from None
    if not isinstance(entries, list):
        raise UserError(f"steps file {path}: expected a list of {{step: module:Class, args: {{...}}}}")
    steps = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), str) or set(entry) - {"step", "args"}:
            raise UserError(f"steps file {path}: entry {number} is not {{step: module:Class, args: {{...}}}}")
        args = entry.get("args") or {}
        if not isinstance(args, dict):
            raise UserError(f"steps file {path}: entry {number}: args must be a mapping")
        steps.append(load_step(entry["step"], args))
    return steps
