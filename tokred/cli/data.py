"""``tokred data check``: decode every video of a split once and list the ones that fail."""

from __future__ import annotations

import argparse
import sys

from tokred.cli.args import POSITIVE_INT, HelpFormatter, existing_path, output_file


def parser() -> argparse.ArgumentParser:
    from tokred.data.readers import READERS
    from tokred.data.video import SAMPLINGS

    ap = argparse.ArgumentParser(
        prog="tokred data", description="dataset tools", formatter_class=HelpFormatter,
        epilog="Train without the bad videos: tokred train ... --bad-videos bad.txt")
    sub = ap.add_subparsers(dest="tool", required=True, metavar="TOOL")
    check = sub.add_parser(
        "check", help="decode the sampled frames of every video; write the bad ids",
        formatter_class=HelpFormatter,
        description="Decode the sampled frames of every video of a split in parallel and list "
        "the ones that fail\n(missing, empty, corrupt, truncated). Exit status 1 when any does.")
    check.add_argument("root", type=existing_path, help="annotation directory (csv/jsonl: file)")
    check.add_argument("--data", default="msrvtt", choices=sorted(READERS), help="dataset kind")
    check.add_argument("--split", default="train", help="split to check")
    check.add_argument("--video-root", default=None, type=existing_path, help="video directory (default: the dataset's, e.g. ROOT/videos)")
    check.add_argument("--frames", type=POSITIVE_INT, default=12,
                       help="frames decoded per video: the frames (or frame pool) you train with")
    check.add_argument("--sampling", default="uniform", choices=list(SAMPLINGS),
                       help="which frames are decoded (as in training)")
    check.add_argument("--threads", type=POSITIVE_INT, default=None,
                       help="videos decoded in parallel (default: the CPU count)")
    check.add_argument("--workers", dest="threads", type=POSITIVE_INT,  # old name, one release
                       help=argparse.SUPPRESS)
    check.add_argument("--out", type=output_file, default=None,
                       help="write the bad ids here, one per line, then a tab and the reason "
                       "(default: print them only)")
    check.add_argument("--trust-pickle", action="store_true",
                       help="read MSVD's caption pickle unrestricted (trusted files only)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    """``tokred data check ROOT``: 0 when every video decodes, 1 when some do not."""
    a = parser().parse_args(argv)
    from tqdm.auto import tqdm

    from tokred.data import load_split
    from tokred.data.check import check_videos, write_bad_ids

    split = load_split(a.data, a.root, a.split, a.video_root, trust_pickle=a.trust_pickle)
    with tqdm(total=len(split.videos), unit="video", desc=f"check {split.name}",
              disable=a.no_progress, dynamic_ncols=True) as bar:
        bad = check_videos(split, a.frames, a.sampling, a.threads,
                           on_done=lambda _id, _reason: bar.update(1))
    for vid, reason in bad.items():
        print(f"{vid}\t{reason}", file=sys.stderr)
    if a.out is not None:
        write_bad_ids(a.out, bad)
    where = f"; ids written to {a.out}" if a.out is not None else ""
    print(f"{split.name}: {len(bad)} of {len(split.videos)} videos cannot be decoded at "
          f"{a.frames} frames{where}")
    return 1 if bad else 0
