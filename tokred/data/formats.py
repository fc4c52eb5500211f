"""Reading annotation files safely: UTF-8 text (a byte-order mark dropped; another encoding is
refused with the command that converts it), JSON, JSON lines and CSV with every problem named
by file (and line), and caption pickles through an unpickler that accepts plain data only.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path
from typing import Any


def need_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; else an error naming it for dataset ``what``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: annotation file {path} not found; check the dataset root")
    return path


def read_text(path: Path) -> str:
    """The file as text: UTF-8, a byte-order mark dropped (spreadsheet exports add one)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as "
                         f"UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); fix or "
                         f"re-download the annotation file") from None


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header naming at least ``columns``."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: needs a header row with columns {', '.join(columns)}; "
                         f"found {reader.fieldnames or 'an empty file'}")
    return list(reader)


class PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: containers, strings, numbers. Any other class or function a
    pickle names (the way a pickle runs code) is refused."""

    ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def read_caption_pickle(path: Path, trust_pickle: bool = False) -> dict:
    """MSVD's ``raw-captions.pkl``: ``{video id: [[token, ...], ...]}``, plain data only.

    Raises:
        ValueError: the pickle names a class or function (it could run code; with
            ``trust_pickle`` it loads unrestricted), is damaged, or has another layout.
    """
    try:
        with path.open("rb") as f:
            raw = pickle.load(f) if trust_pickle else PlainUnpickler(f).load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: holds more than plain containers and strings ({err}); "
                         f"unpickling it could run code hidden in it. If you trust the file, "
                         f"pass --trust-pickle (trust_pickle=True)") from None
    except (EOFError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable pickle ({type(err).__name__}: {err}); "
                         f"download it again") from None
    ok = isinstance(raw, dict) and all(
        isinstance(caps, (list, tuple)) and all(isinstance(c, (list, tuple)) for c in caps)
        for caps in raw.values())
    if not ok:
        raise ValueError(f"{path}: expected {{video id: [[token, ...], ...]}} (MSVD "
                         f"raw-captions.pkl as CLIP4Clip ships it), got {type(raw).__name__}")
    return raw


def read_jsonl(path: Path) -> list[Any]:
    recs = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not a JSON record ({err.msg}); one JSON object "
                             f"per line, e.g. {{\"video\": \"a.mp4\", \"caption\": \"...\"}}") from None
    return recs
