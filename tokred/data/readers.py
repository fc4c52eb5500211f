"""Dataset readers for the real annotation layouts of text-video retrieval benchmarks.

Every reader returns a :class:`Split`: the videos, the captions, and for each caption the index
of its video, so multi-caption videos (MSR-VTT train, MSVD) are explicit. Paragraph-retrieval
datasets (DiDeMo, ActivityNet) have one caption per video: all its sentences concatenated.

Video files are not opened here; call :func:`check_files` before training to report every
missing file at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tokred.data.formats import (
    need_file,
    read_caption_pickle,
    read_csv,
    read_json,
    read_jsonl,
    read_text,
)

logger = logging.getLogger(__name__)

__all__ = ["VideoItem", "Split", "check_files", "load_split", "READERS"]


@dataclass(frozen=True)
class VideoItem:
    """One video: dataset id and file path (which may not exist yet; see ``check_files``)."""

    id: str
    path: Path


@dataclass
class Split:
    """A dataset split: videos, captions, and the video index of each caption.

    Attributes:
        name: e.g. ``"msrvtt/test"``.
        videos: The split's videos, each listed once.
        captions: All captions.
        caption_video: ``caption_video[i]`` indexes ``videos`` for caption ``i``.
        video_root: Directory the video paths were resolved against (named in errors).
    """

    name: str
    videos: list[VideoItem]
    captions: list[str]
    caption_video: list[int]
    video_root: Optional[Path] = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.caption_video):
            raise ValueError(
                f"{self.name}: {len(self.captions)} captions but "
                f"{len(self.caption_video)} caption_video entries"
            )
        bad = [i for i in self.caption_video if not 0 <= i < len(self.videos)]
        if bad:
            raise ValueError(f"{self.name}: caption_video has out-of-range entries, e.g. {bad[:3]}")

    def video_captions(self) -> list[list[int]]:
        """Caption indices of each video: ``[num_videos][k]``."""
        out: list[list[int]] = [[] for _ in self.videos]
        for c, v in enumerate(self.caption_video):
            out[v].append(c)
        return out

    def __repr__(self) -> str:
        return f"Split({self.name!r}, videos={len(self.videos)}, captions={len(self.captions)})"


def missing_files(split: Split) -> list[VideoItem]:
    """The videos of ``split`` whose file does not exist."""
    return [v for v in split.videos if not v.path.is_file()]


def check_files(split: Split) -> None:
    """Raises ``FileNotFoundError`` listing ALL missing video files of a split (first 10 shown).

    Call it before training starts so a bad path fails in seconds, not hours in.
    """
    missing = missing_files(split)
    if not missing:
        return
    shown = "\n".join(f"  {v.id}: {v.path}" for v in missing[:10])
    more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
    root = split.video_root or missing[0].path.parent
    raise FileNotFoundError(
        f"{split.name}: {len(missing)} of {len(split.videos)} video files are missing:\n"
        f"{shown}{more}\nFix the video root ({root}) or pass video_root= to load_split."
    )


def _build(name: str, items: Iterable[tuple[str, Path, str]], video_root: Path | None) -> Split:
    """Groups ``(video_id, path, caption)`` rows into a Split, keeping first-seen video order."""
    index: dict[str, int] = {}
    videos: list[VideoItem] = []
    captions: list[str] = []
    caption_video: list[int] = []
    for vid, path, caption in items:
        if vid not in index:
            index[vid] = len(videos)
            videos.append(VideoItem(vid, path))
        captions.append(caption.strip())
        caption_video.append(index[vid])
    split = Split(name, videos, captions, caption_video, video_root)
    logger.info("loaded %r", split)
    return split


def _resolve(video_root: Path, names: list[str]) -> Path:
    """First existing candidate file name under ``video_root`` (else the first, for reporting)."""
    for n in names:
        if (video_root / n).is_file():
            return video_root / n
    return video_root / names[0]


def _split_file(split: str, files: dict[str, Any], kind: str) -> Any:
    if split not in files:
        raise ValueError(f"{kind} has no split {split!r}; available: {sorted(files)}")
    return files[split]


MSRVTT_SPLITS = {
    "train": "MSRVTT_train.9k.csv",
    "train9k": "MSRVTT_train.9k.csv",
    "train7k": "MSRVTT_train.7k.csv",
    "test": "MSRVTT_JSFUSION_test.csv",
}


def read_msrvtt(root: Path, split: str, video_root: Path) -> Split:
    """MSR-VTT, CLIP4Clip layout: train ids from a csv + all captions from ``MSRVTT_data.json``;
    test is ``MSRVTT_JSFUSION_test.csv`` (one caption per video). Videos ``<video_id>.mp4``."""
    path = need_file(root / _split_file(split, MSRVTT_SPLITS, "msrvtt"), "msrvtt")
    rows = read_csv(path, ("video_id", "sentence") if split == "test" else ("video_id",))
    if split == "test":
        items = ((r["video_id"], video_root / f"{r['video_id']}.mp4", r["sentence"]) for r in rows)
        return _build("msrvtt/test", items, video_root)
    ids = [r["video_id"] for r in rows]  # video order follows the split csv
    data_path = need_file(root / "MSRVTT_data.json", "msrvtt")
    data = read_json(data_path)
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise ValueError(f"{data_path}: expected an object with a 'sentences' list of "
                         f"{{video_id, caption}}; is it MSR-VTT's MSRVTT_data.json?")
    by_video: dict[str, list[str]] = {i: [] for i in ids}
    for s in data["sentences"]:
        if s["video_id"] in by_video:
            by_video[s["video_id"]].append(s["caption"])
    empty = [i for i, c in by_video.items() if not c]
    if empty:
        logger.warning(
            "msrvtt/%s: %d listed videos have no caption in MSRVTT_data.json, e.g. %s; skipped",
            split,
            len(empty),
            empty[:3],
        )
    items = ((i, video_root / f"{i}.mp4", c) for i, cs in by_video.items() for c in cs)
    return _build(f"msrvtt/{split}", items, video_root)


def read_msvd(root: Path, split: str, video_root: Path, trust_pickle: bool = False) -> Split:
    """MSVD: ``{split}_list.txt`` ids + ``raw-captions.pkl`` (id -> list of token lists);
    videos ``<id>.avi``. Every caption is kept (about 40 per video). The pickle is read as
    plain data (:func:`read_caption_pickle`)."""
    ids = read_text(need_file(root / f"{split}_list.txt", "msvd")).split()
    raw = read_caption_pickle(need_file(root / "raw-captions.pkl", "msvd"), trust_pickle)
    missing = [i for i in ids if i not in raw]
    if missing:
        raise ValueError(
            f"msvd/{split}: {len(missing)} ids have no captions in raw-captions.pkl, "
            f"e.g. {missing[:3]}; is the pickle from the same MSVD release?"
        )
    items = ((i, video_root / f"{i}.avi", " ".join(toks)) for i in ids for toks in raw[i])
    return _build(f"msvd/{split}", items, video_root)


def read_didemo(root: Path, split: str, video_root: Path) -> Split:
    """DiDeMo, CLIP4Clip layout: ``{split}_data.json`` list of ``{video, description, times}``.
    Paragraph retrieval: a video's descriptions joined in file order."""
    data = read_json(need_file(root / f"{split}_data.json", "didemo"))
    paras: dict[str, list[str]] = {}
    for item in data:
        paras.setdefault(item["video"], []).append(item["description"].strip())
    items = (
        (v, _resolve(video_root, [v, f"{Path(v).stem}.mp4"]), " ".join(d)) for v, d in paras.items()
    )
    return _build(f"didemo/{split}", items, video_root)


ANET_SPLITS = {
    "train": ("train.json", "train_ids.json"),
    "val": ("val_1.json", "val_ids.json"),
    "test": ("val_1.json", "val_ids.json"),
}


def read_activitynet(root: Path, split: str, video_root: Path) -> Split:
    """ActivityNet Captions: ``{id: {duration, timestamps, sentences}}`` + ``*_ids.json``;
    paragraph = sentences joined. ``test`` is an alias of ``val`` (val_1), as in the papers.
    Videos ``v_<id>.mp4`` or ``.mkv``."""
    ann_name, ids_name = _split_file(split, ANET_SPLITS, "activitynet")
    ann = read_json(need_file(root / ann_name, "activitynet"))
    ids = read_json(need_file(root / ids_name, "activitynet"))
    kept = [i for i in ids if i in ann]
    if len(kept) < len(ids):
        logger.warning(
            "activitynet/%s: %d ids have no entry in %s; skipped",
            split,
            len(ids) - len(kept),
            ann_name,
        )

    def row(i: str) -> tuple[str, Path, str]:
        name = i if i.startswith("v_") else f"v_{i}"
        text = " ".join(s.strip() for s in ann[i]["sentences"])
        return i, _resolve(video_root, [f"{name}.mp4", f"{name}.mkv", f"{name}.webm"]), text

    return _build(f"activitynet/{split}", (row(i) for i in kept), video_root)


LSMDC_SPLITS = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}


def read_lsmdc(root: Path, split: str, video_root: Path) -> Split:
    """LSMDC: tab-separated ``clip, start, end, start, end, caption``; video
    ``<movie>/<clip>.avi`` where movie is the clip name up to its last ``_``."""
    path = need_file(root / _split_file(split, LSMDC_SPLITS, "lsmdc"), "lsmdc")

    def rows() -> Iterable[tuple[str, Path, str]]:
        for n, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 6:
                raise ValueError(f"{path}:{n}: expected 6 tab-separated fields, got {len(fields)}")
            clip = fields[0]
            yield clip, video_root / clip.rsplit("_", 1)[0] / f"{clip}.avi", "\t".join(fields[5:])

    return _build(f"lsmdc/{split}", rows(), video_root)


def read_table(root: Path, split: str, video_root: Path | None) -> Split:
    """Plain CSV (columns ``video,caption``) or JSONL (keys ``video, caption``).

    ``root`` is the file itself, or a directory holding ``{split}.csv`` / ``{split}.jsonl``.
    Video paths are relative to the file's directory unless ``video_root`` is given.
    """
    path = root
    if root.is_dir():
        cands = [root / f"{split}.csv", root / f"{split}.jsonl"]
        path = next((c for c in cands if c.is_file()), cands[0])
    need_file(path, "table")
    base = video_root or path.parent
    recs = read_jsonl(path) if path.suffix == ".jsonl" else read_csv(path, ("video", "caption"))
    for n, r in enumerate(recs, 1):
        if not isinstance(r, dict) or "video" not in r or "caption" not in r:
            raise ValueError(f"{path} record {n}: needs 'video' and 'caption', has "
                             f"{sorted(r) if isinstance(r, dict) else r!r}")
    return _build(
        f"{path.stem}", ((r["video"], base / r["video"], r["caption"]) for r in recs), base
    )


READERS: dict[str, Callable[..., Split]] = {
    "msrvtt": read_msrvtt,
    "msvd": read_msvd,
    "didemo": read_didemo,
    "activitynet": read_activitynet,
    "lsmdc": read_lsmdc,
    "csv": read_table,
    "jsonl": read_table,
}


def load_split(
    kind: str,
    root: str | Path,
    split: str = "test",
    video_root: str | Path | None = None,
    *,
    trust_pickle: bool = False,
) -> Split:
    """Reads one split of a dataset.

    Args:
        kind: One of ``READERS`` (msrvtt, msvd, didemo, activitynet, lsmdc, csv, jsonl).
        root: Directory of the annotation files (for csv/jsonl: the file or its directory).
        split: ``train``, ``val`` or ``test`` (msrvtt also ``train7k``/``train9k``).
        video_root: Directory of the video files; default ``root/videos`` (csv/jsonl: relative
            to the annotation file).
        trust_pickle: read MSVD's caption pickle unrestricted (see :func:`read_caption_pickle`).

    Returns:
        The :class:`Split`.

    Raises:
        FileNotFoundError: an annotation file is missing.
        ValueError: an unknown kind or split, an annotation file that is not UTF-8, not valid
            JSON/CSV or not in the dataset's layout, or a split that lists no video.
    """
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; available: {sorted(READERS)}")
    root = Path(root)
    try:
        if kind in ("csv", "jsonl"):
            out = read_table(root, split, Path(video_root) if video_root else None)
        elif kind == "msvd":
            out = read_msvd(root, split, Path(video_root) if video_root else root / "videos",
                            trust_pickle)
        else:
            out = READERS[kind](root, split, Path(video_root) if video_root else root / "videos")
    except (KeyError, TypeError, AttributeError) as err:  # a record without a field it needs
        raise ValueError(f"{kind} annotations under {root} ({split}) are not in the layout "
                         f"{READERS[kind].__name__} reads ({type(err).__name__}: {err}); see "
                         f"its docstring, or check that --data names the right dataset") from None
    if not out.videos:
        raise ValueError(f"{out.name}: the annotation files under {root} list no video for "
                         f"split {split!r}; check the file (header only?) and the split name")
    return out
