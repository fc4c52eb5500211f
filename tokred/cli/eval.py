"""``tokred eval``: retrieval metrics of a tokred model.pt or a CLIP checkpoint (zero-shot) on a split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokred.retrieval.evaluate import evaluate, format_metrics, load_model


def main(argv: list[str] | None = None) -> int:
    """``tokred eval``: evaluate a tokred checkpoint, or a CLIP checkpoint zero-shot, on a split."""
    ap = argparse.ArgumentParser(prog="tokred eval", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True,
                    help="tokred model.pt (from tokred train), or a CLIP checkpoint for "
                    "zero-shot: OpenAI state dict / TorchScript .pt, CLIP4Clip pytorch_model.bin.N")
    ap.add_argument("--model", default=None,
                    help="CLIP architecture of a checkpoint without tokred meta (e.g. ViT-B-32; "
                    "inferred from the weights when possible)")
    ap.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                    help="override the MLP activation (default: the checkpoint's; QuickGELU "
                    "for CLIP files)")
    ap.add_argument("--data", default="msrvtt", help="dataset kind (tokred.data.READERS)")
    ap.add_argument("--root", required=True, help="annotation directory")
    ap.add_argument("--split", default="test")
    ap.add_argument("--video-root", default=None)
    ap.add_argument("--reducer", default=None, help="evaluate with this reducer instead")
    ap.add_argument("--reducer-options", type=json.loads, default=None, help="JSON options")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--out", default=None, help="directory for sim.npz and metrics.json")
    a = ap.parse_args(argv)
    from tokred.data import load_split
    from tokred.synth import load_meta

    split = load_split(a.data, a.root, a.split, a.video_root)
    meta = load_meta(a.root) if (Path(a.root) / "synth_meta.json").is_file() else None
    model = load_model(a.checkpoint, a.reducer, a.reducer_options, a.frames,
                       model_name=a.model, quick_gelu=a.quick_gelu)
    res = evaluate(
        model,
        split,
        frames=a.frames,
        batch_size=a.batch_size,
        precision=a.precision,
        out=a.out,
        synth_meta=meta,
    )
    print(format_metrics(res))
    return 0
