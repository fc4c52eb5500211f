"""The one validation layer for numbers and paths, shared by every command and config.

A :class:`Rule` checks a number (``POSITIVE_INT``, ``FRACTION``, ...). The same object is an
argparse ``type=`` (``--frames 0`` is refused by the parser, naming the flag) and the check
that :class:`~tokred.training.config.TrainConfig` and the sweep configs run on their values
(naming the field or ``file:line``). Path types check an input exists, or an output location
can be written, before any work starts. The flags every computing command shares (``--device``,
``--threads``, ``--plugin``) and the help formatter that shows defaults are defined here once.
Nothing here imports the rest of tokred (torch only when a device is checked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Rule:
    """A number of ``kind`` (int or float) within ``[low, high]`` (ends open when asked).

    Attributes:
        kind: ``int`` or ``float``.
        text: what a valid value is, for messages (``a positive integer``).
        low / high: bounds, None for unbounded.
        low_open / high_open: exclude the bound itself.
    """

    kind: type
    text: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, value: Any, name: str) -> int | float:
        """``value`` as a number of this rule's kind.

        Numeric strings are read (YAML reads ``1e-3`` as text), integral floats are ints.

        Raises:
            ValueError: not a number of the kind, or out of range; the message names ``name``.
        """
        number = self._coerce(value)
        if number is None or not self._in_range(number):
            raise ValueError(f"{name} must be {self.text}, got {value!r}")
        return number

    def __call__(self, text: str) -> int | float:
        """argparse ``type=``: the parsed number, or an error argparse shows with the flag."""
        try:
            return self.check(text, "value")
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.text}, got {text!r}") from None

    def _coerce(self, value: Any) -> int | float | None:
        if isinstance(value, bool):
            return None  # True is an int to Python, never a count or a rate to a user
        if isinstance(value, str):
            try:
                value = float(value) if self.kind is float else int(value, 10)
            except ValueError:
                return None
        if not isinstance(value, (int, float)) or math.isnan(value):
            return None
        if self.kind is int:
            return int(value) if float(value).is_integer() else None
        return float(value)

    def _in_range(self, x: float) -> bool:
        if math.isinf(x):
            return False
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return self.high is None or not (x > self.high or (self.high_open and x == self.high))


POSITIVE_INT = Rule(int, "a positive integer (1, 2, ...)", low=1)
NONNEG_INT = Rule(int, "an integer >= 0", low=0)
POSITIVE = Rule(float, "a number > 0", low=0, low_open=True)
NONNEG = Rule(float, "a number >= 0", low=0)
FRACTION = Rule(float, "in [0, 1) (a fraction)", low=0, high=1, high_open=True)
PROBABILITY = Rule(float, "a number in [0, 1]", low=0, high=1)


def check_optional(rule: Rule, value: Any, name: str) -> Any:
    """``rule.check`` unless ``value`` is None (an unset optional setting)."""
    return None if value is None else rule.check(value, name)


def json_numbers(count: int, rule: Rule, example: str):
    """argparse ``type=``: a JSON list of ``count`` numbers, each checked by ``rule``."""

    def parse(text: str) -> list:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or len(value) != count:
            raise argparse.ArgumentTypeError(f"must be a JSON list of {count} numbers like "
                                             f"'{example}', got {text!r}")
        try:
            return [rule.check(v, "each number") for v in value]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{err} (in {text!r})") from None

    return parse


def json_object(text: str) -> dict:
    """argparse ``type=``: a JSON object such as ``'{"r": 2}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}; write e.g. "
                                         f"'{{\"r\": 2}}' in single quotes") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"r\": 2}}', got {text!r}")
    return value


def existing_file(text: str) -> Path:
    """argparse ``type=``: a file that exists."""
    path = Path(text)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return path


def existing_path(text: str) -> Path:
    """argparse ``type=``: a file or directory that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def output_dir(text: str) -> Path:
    """argparse ``type=``: a directory that exists and is writable, or can be created."""
    problem = unwritable_dir(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def output_file(text: str) -> Path:
    """argparse ``type=``: a file that can be written (its directory exists or can be made)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name in it")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text} is not writable; choose another file")
    problem = unwritable_dir(path.parent)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return path


def unwritable_dir(path: Path) -> str | None:
    """Why files cannot be written in directory ``path`` (None: they can).

    The nearest existing ancestor must be a directory in which one can create entries; a
    temporary directory is made there and removed at once (``os.access`` says yes to root even
    on read-only or virtual file systems such as ``/proc``).
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{path}: {probe} is a file, not a directory; choose another output location"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tokred-probe-", dir=probe))
    except OSError as err:
        return (f"{path}: cannot write in {probe} ({err.strerror or err}); choose a writable "
                f"output location")
    return None


def python_file(text: str) -> Path:
    """argparse ``type=``: an existing ``.py`` file (a reducer plugin)."""
    path = existing_file(text)
    if path.suffix != ".py":
        raise argparse.ArgumentTypeError(f"{text} is not a .py file; a plugin is a Python file "
                                         f"defining @register_reducer classes")
    return path


def device(text: str) -> str:
    """argparse ``type=``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or another torch device);
    a CUDA device is refused at once when this machine has none."""
    if text == "auto":
        return text
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}") \
            from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use "
                                         f"auto or cpu")
    return text


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DEVICE_HELP = "torch device: auto (cuda if available, else cpu), cpu, cuda or cuda:N"
THREADS_HELP = "torch CPU threads (torch.set_num_threads; default: torch's, usually the cores)"
PLUGIN_HELP = ("load reducers from a local .py file for this run (repeatable; default: "
               "none); its @register_reducer names may not clash with installed ones")


@contextlib.contextmanager
def using_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: unchanged), then restore them
    (tests and library callers run commands in their own process)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def add_compute_flags(ap: argparse.ArgumentParser, plugins: bool = True) -> None:
    """``--device`` (default auto), ``--threads`` and, with ``plugins``, ``--plugin``: the flags
    every command that computes shares, spelled and checked the same everywhere."""
    ap.add_argument("--device", type=device, default="auto", help=DEVICE_HELP)
    ap.add_argument("--threads", type=POSITIVE_INT, default=None, help=THREADS_HELP)
    if plugins:
        add_plugin_flag(ap)


def add_plugin_flag(ap: argparse.ArgumentParser) -> None:
    """``--plugin FILE.py`` (repeatable)."""
    ap.add_argument("--plugin", type=python_file, action="append", default=[],
                    metavar="FILE.py", help=PLUGIN_HELP)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with ``(default: X)`` after every option that has a default worth showing.

    Not after a default of None or False (an unset option or an off switch: its help says
    what unset means), nor when the help already names its default; descriptions and
    epilogs keep their line breaks.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text, value = action.help or "", action.default
        unset = value is None or value is False or value is argparse.SUPPRESS or value == []
        if unset or "default" in text.lower():
            return text
        return super()._get_help_string(action)
