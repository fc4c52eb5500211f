"""What a quality trial ran, read back from its record, in words: weights, test set, training
run, and whether it follows the papers' published protocol."""

from __future__ import annotations

import math
from pathlib import Path


def known(v) -> bool:
    """A recorded value: neither None nor NaN."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# What the published MSR-VTT rows were run with (CenterCLIP Table 3b: MSR-VTT 1k-A test, 9k
# training split, 12 frames, 5 epochs from the OpenAI CLIP weights); a row is "as published"
# only when its record shows the same.
PROTOCOL = {"msrvtt": {"test_captions": 1000, "frames": 12, "epochs": 5.0, "train_videos": 9000}}


def run_facts(s: dict, m: dict) -> dict:
    """What a quality trial ran, from its record: weights, test size, frames, training."""
    base = m.get("base_train") or {}
    kind = m.get("weights_kind") or ("file" if s.get("weights") else "scratch")
    name = m.get("weights_file") or (Path(s["weights"]).name if s.get("weights") else None)
    return {"weights kind": kind, "weights file": name,
            "weights sha": (m.get("weights_sha256") or "")[:8] or None,
            "weights release": m.get("weights_release"),
            "test captions": m.get("num_captions"), "test videos": m.get("num_videos"),
            "chance t2v R@1": m.get("chance_R@1"), "frames": m.get("frames", s.get("frames")),
            "base total steps": base.get("total_steps"), "base epochs": m.get("base_epochs"),
            "train videos": m.get("train_videos"), "train steps": m.get("train_steps"),
            "train epochs": m.get("train_epochs"), "recipe epochs": m.get("recipe_epochs"),
            "recipe steps": m.get("recipe_steps")}


def weights_text(row) -> str:
    """``ViT-B-32.pt (sha256 40d36571, open_clip ViT-B-32/openai)`` / trained here / random."""
    kind = row.get("weights kind")
    if kind == "random":
        return "random (untrained)"
    if kind == "scratch":
        steps, ep, n = row.get("base steps"), row.get("base epochs"), row.get("train videos")
        if not known(steps):
            return f"{row['model']} trained from scratch here (steps not recorded)"
        return (f"{row['model']} trained from scratch here ({_plural(int(steps), 'step')}"
                + (f", {ep:.2f} epochs" if known(ep) else "")
                + (f" of {_plural(int(n), 'video')}" if known(ep) and known(n) else "") + ")")
    if kind == "tag":
        return f"open_clip pretrained tag {row.get('weights file')}"
    sha, rel = row.get("weights sha"), row.get("weights release")
    return (f"{row.get('weights file')} (" + (f"sha256 {sha}" if known(sha) else
                                              "hash not recorded")
            + (f", the open_clip {rel} release file" if known(rel) else "") + ")")


def test_text(row) -> str:
    """``1,000 test captions / 1,000 test videos, chance t2v R@1 0.10 %``."""
    caps, vids = row.get("test captions"), row.get("test videos")
    if not (known(vids) and known(caps)):
        return "test size not recorded"
    chance = row.get("chance t2v R@1")
    chance = chance if known(chance) else 100.0 / int(vids)
    return (f"{_plural(int(caps), 'test caption')}, {_plural(int(vids), 'test video')} (chance "
            f"t2v R@1 = 1/{int(vids):,} = {chance:.2f} %)")


def training_text(row) -> str:
    """The training a row's numbers come after (never a recipe's plan, only what ran)."""
    if row.get("mode") != "finetuned":
        return "none: the reducer is inserted into the weights above"
    steps = row.get("train steps")
    if not known(steps):
        return "fine-tune (steps not recorded)"
    ep, n = row.get("train epochs"), row.get("train videos")
    recipe = row.get("recipe")  # full / lora: the report's parameter note says what each trains
    text = f"fine-tune {_plural(int(steps), 'step')}"
    if isinstance(recipe, str):
        text = f"{recipe} {text}"
    if known(ep):
        text += f" ({ep:.2f} epochs" + (f" of {_plural(int(n), 'video')}" if known(n) else "") + ")"
    plan = row.get("recipe epochs")
    if known(plan):
        text += f", recipe {plan:g} epochs"
    elif known(row.get("recipe steps")):
        text += f", recipe max_steps {int(row['recipe steps'])}"
    return text


def protocol(row) -> str:
    """``as published`` or ``not comparable: <why>`` against the papers' MSR-VTT protocol."""
    ref = PROTOCOL.get(row.get("data"))
    if ref is None:
        return "not comparable: " + ("synthetic data" if row.get("data") == "synth"
                                     else f"no published protocol for {row.get('data')}")
    why = []
    kind = row.get("weights kind")
    if kind == "random":
        why.append("random weights")
    elif kind == "scratch":
        why.append("weights trained from scratch here, not CLIP")
    caps = row.get("test captions")
    if not known(caps):
        why.append("test size not recorded")
    elif int(caps) != ref["test_captions"]:
        why.append(f"{int(caps):,} test captions, not {ref['test_captions']:,}")
    if known(row.get("frames")) and int(row["frames"]) != ref["frames"]:
        why.append(f"{int(row['frames'])} frames, not {ref['frames']}")
    if row.get("mode") == "finetuned":
        ep, n = row.get("train epochs"), row.get("train videos")
        if not known(ep):
            why.append("training length not recorded")
        elif ep < ref["epochs"] - 1e-6:
            why.append(f"fine-tuned {ep:.2f} epochs, not {ref['epochs']:g}")
        if known(n) and int(n) != ref["train_videos"]:
            why.append(f"{int(n):,} training videos, not {ref['train_videos']:,}")
    return "as published" if not why else "not comparable: " + "; ".join(why)
