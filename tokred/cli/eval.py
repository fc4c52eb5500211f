"""``tokred eval``: retrieval metrics of a tokred model.pt or a CLIP checkpoint (zero-shot) on a split."""

from __future__ import annotations

import argparse
from pathlib import Path

from tokred.cli.args import (
    POSITIVE_INT,
    HelpFormatter,
    add_compute_flags,
    existing_file,
    existing_path,
    json_object,
    output_dir,
    resolve_device,
    using_threads,
)
from tokred.retrieval.evaluate import evaluate, format_metrics, load_model
from tokred.training.precision import PRECISIONS


def parser() -> argparse.ArgumentParser:
    from tokred.data.readers import READERS

    ap = argparse.ArgumentParser(prog="tokred eval", description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=existing_file,
                    help="tokred model.pt (from tokred train), or a CLIP checkpoint for "
                    "zero-shot: OpenAI state dict / TorchScript .pt, CLIP4Clip pytorch_model.bin.N")
    ap.add_argument("--model", default=None,
                    help="CLIP architecture of a checkpoint without tokred meta, e.g. ViT-B-32 "
                    "(default: the checkpoint's, or inferred from the weights)")
    ap.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                    help="override the MLP activation (default: the checkpoint's; QuickGELU "
                    "for CLIP files)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="load a checkpoint (or MSVD caption pickle) holding arbitrary Python "
                    "objects; loading it can run code in it: trusted files only")
    ap.add_argument("--data", default="msrvtt", choices=sorted(READERS), help="dataset kind")
    ap.add_argument("--root", required=True, type=existing_path,
                    help="annotation directory (csv/jsonl: the file)")
    ap.add_argument("--split", default="test", help="split to evaluate")
    ap.add_argument("--video-root", default=None, type=existing_path,
                    help="video directory (default: the dataset's, e.g. ROOT/videos)")
    ap.add_argument("--reducer", default=None,
                    help="evaluate with this reducer instead (default: the checkpoint's; none "
                    "for CLIP files)")
    ap.add_argument("--reducer-options", type=json_object, default=None,
                    help="JSON options of --reducer, e.g. '{\"r\": 2}' (default: the "
                    "checkpoint's, or the reducer's defaults)")
    ap.add_argument("--frames", type=POSITIVE_INT, default=None,
                    help="frames per video (default: the checkpoint's; 12 for CLIP files)")
    ap.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="videos per batch")
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS,
                    help="autocast precision")
    add_compute_flags(ap)
    ap.add_argument("--out", type=output_dir, default=None,
                    help="directory for sim.npz and metrics.json (with provenance); default: "
                    "print only")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``tokred eval``: evaluate a tokred checkpoint, or a CLIP checkpoint zero-shot, on a split."""
    ap = parser()
    a = ap.parse_args(argv)
    if a.reducer_options is not None and a.reducer is None:
        ap.error("--reducer-options needs --reducer (the options of which reducer?); to change "
                 "the checkpoint's own reducer's options, name it with --reducer too")
    from tokred.data import load_split
    from tokred.plugins import load_plugin_files

    load_plugin_files(a.plugin)
    root = str(a.root)
    split = load_split(a.data, root, a.split, a.video_root, trust_pickle=a.trust_pickle)
    meta = synth_meta(root, a.split)
    with using_threads(a.threads):
        model = load_model(a.checkpoint, a.reducer, a.reducer_options, a.frames,
                           resolve_device(a.device), model_name=a.model,
                           quick_gelu=a.quick_gelu, trust_pickle=a.trust_pickle)
        res = evaluate(model, split, frames=a.frames, batch_size=a.batch_size,
                       precision=a.precision, out=a.out, synth_meta=meta)
    print(format_metrics(res))
    return 0


def synth_meta(root: str, split: str):
    """The synthetic benchmark's per-caption annotations when ``root`` is one and ``split`` is
    its test split (``synth_meta.json`` describes the test captions only), else None."""
    from tokred.synth import load_meta

    return load_meta(root) if split == "test" and (Path(root) / "synth_meta.json").is_file() \
        else None
