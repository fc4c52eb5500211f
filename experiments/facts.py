"""What a trial actually ran, stored in its record so the report names it instead of guessing.

Weights (file name and content hash, or how the base model came about), the size of the
training split and the epochs run, and reducer diagnostics (CenterCLIP's spectral reducer
counts the segments whose affinity graph was empty). Called by ``quality.quality_trial`` and
``trials.cost_trial`` when a trial runs; the report only reads the stored values.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import fields
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (computed once per file version in a process)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime)


@functools.lru_cache(maxsize=1)
def _release_hashes() -> dict[str, str]:
    """sha256 -> ``model/tag`` of the open_clip pretrained files whose URL carries their hash
    (the OpenAI CLIP releases: ``.../clip/models/<sha256>/ViT-B-32.pt``)."""
    try:
        import open_clip

        out = {}
        for model, tag in open_clip.list_pretrained():
            url = (open_clip.get_pretrained_cfg(model, tag) or {}).get("url") or ""
            m = re.search(r"/([0-9a-f]{64})/", url)
            if m:
                out.setdefault(m.group(1), f"{model}/{tag}")
        return out
    except Exception as err:  # the record just lacks the release name
        log.debug("no open_clip release hashes: %s", err)
        return {}


def weights_facts(weights: str | None) -> dict:
    """``weights_kind`` (file, tag, scratch, random), ``weights_file``, ``weights_sha256`` and,
    when the hash is a known release, ``weights_release`` (e.g. ``ViT-B-32/openai``)."""
    if not weights:
        return {"weights_kind": "scratch"}  # the base model is trained here
    if weights == "random":
        return {"weights_kind": "random"}
    path = Path(weights)
    if not path.is_file():
        return {"weights_kind": "tag", "weights_file": str(weights)}
    sha = sha256_file(path)
    out = {"weights_kind": "file", "weights_file": path.name, "weights_sha256": sha}
    if sha in _release_hashes():
        out["weights_release"] = _release_hashes()[sha]
    return out


@functools.lru_cache(maxsize=4)
def _train_videos(root: str) -> int | None:
    from tokred.data import load_split

    try:
        return len(load_split("msrvtt", root, "train").videos)
    except (OSError, ValueError, KeyError) as err:
        log.warning("cannot count the training videos under %s: %s", root, err)
        return None


def _recipe(recipe: dict) -> dict:
    """The recipe with TrainConfig's defaults filled in (batch_size, epochs, max_steps)."""
    from tokred.training import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    return {k: recipe.get(k, defaults[k]) for k in ("batch_size", "epochs", "max_steps")}


def training_facts(s: dict, res: dict, root: str | Path) -> dict:
    """Training actually run for a quality trial: training videos, base and fine-tune epochs,
    and the fine-tune recipe's planned length (``recipe_epochs`` / ``recipe_steps``)."""
    base = res.get("base_train") or {}
    if s.get("weights") and s.get("mode") != "finetuned":
        return {}
    n = _train_videos(str(root))
    out: dict = {"train_videos": n}

    def epochs(steps, recipe: dict):
        per = n // int(recipe["batch_size"]) if n else 0
        return None if steps is None or not per else steps / per

    if base.get("steps") is not None:
        out["base_epochs"] = epochs(base["steps"], _recipe(s.get("base") or {}))
    if s.get("mode") == "finetuned":
        r = _recipe(s.get("finetune") or {})
        out["train_epochs"] = epochs(res.get("train_steps"), r)
        out["recipe_steps"] = r["max_steps"]
        out["recipe_epochs"] = None if r["max_steps"] else float(r["epochs"])
    return out


def reducer_diagnostics(reducer) -> dict:
    """The reducer's own counters (``diagnostics()``; ``{}`` when it has none)."""
    return dict(getattr(reducer, "diagnostics", lambda: {})() or {})


def cost_diagnostics(s: dict, device: str = "cpu") -> dict:
    """Diagnostics of a cost trial's reducer: one video (batch 1) through the random-weight
    encoder ``tokred.cost.measure`` builds (same builder, same seed). Nothing is built for a
    reducer without counters."""
    from tokred import create_reducer

    if not reducer_diagnostics(create_reducer(s["reducer"], **s["options"])):
        return {}
    from tokred.cost.build import build
    from tokred.cost.timing import fixed_video

    enc = build(s["backbone"], s["reducer"], s["options"], s["frames"], device=device).encoder
    video = fixed_video(1, s["frames"], enc.spec.image_size, device)
    with torch.inference_mode():
        enc(video)
    return {**reducer_diagnostics(enc.reducer), "diagnostics_on": "1 random video"}
