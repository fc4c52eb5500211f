"""Tables (Markdown + CSV) and figures from results files alone (no model needed).

Usage::

    tokred report runs/default            # writes runs/default/report/
    tokred report runs/a runs/b -o merged/  # several result dirs or files
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from .published import load_published
from .records import load_results, result_files
from .report_cost import cost_section
from .report_header import header_lines
from .report_quality import quality_section
from .tables import PARAMS_ALL, PARAMS_LORA, PARAMS_TRAINED, cost_frame, quality_frame

log = logging.getLogger(__name__)

PARAMS_NOTE = (
    f"**Parameter counts** (three columns, three different counts): '{PARAMS_ALL}' (cost "
    "tables) is every parameter of the model (both CLIP towers; the image model alone for a "
    "timm backbone) plus the reducer's own, all of which the cost section's full fine-tuning "
    f"memory measurement trains. '{PARAMS_LORA}' (cost tables) is what TempMe's LoRA recipe "
    "trains: rank-8 adapters on every qkv of both towers plus the reducer's own parameters. "
    f"'{PARAMS_TRAINED}' (quality tables) is what the row's own training run updated: 0 "
    "without a fine-tune; with the 'full' recipe every parameter except the input embeddings, "
    "which CLIP4Clip and CenterCLIP keep frozen (patch embedding, class and positional "
    "embeddings, ln_pre, the text token and positional embeddings), hence fewer than "
    f"'{PARAMS_ALL}' (the text token embedding alone is vocabulary x width); with the 'lora' "
    f"recipe the adapters and the reducer's parameters, as in '{PARAMS_LORA}'. Published rows "
    "give the paper's own count.")


def with_presets(df: pd.DataFrame) -> pd.DataFrame:
    """A ``preset`` column: the reducer preset each row's options amount to, defaults filled
    (``tokred.preset_of``; None for other settings, whose ``setting`` text says it all)."""
    if df.empty:
        return df
    from tokred import preset_of

    return df.assign(preset=[preset_of(r, o) for r, o in zip(df["reducer"], df["options"])])


def error_section(records: list[dict]) -> list[str]:
    """A table of the failed trials with their errors (empty when none failed)."""
    bad = [r for r in records if r.get("status") != "ok"]
    if not bad:
        return []
    lines = ["## Failed trials", "", "A rerun of the sweep retries them.", "",
             "| id | kind | setting | error |", "|---|---|---|---|"]
    for r in bad:
        s = r["settings"]
        err = str(r.get("error", "")).replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {r['id']} | {r['kind']} | {s['reducer']} {s['options']} | {err} |")
    return lines + [""]


def write_report(inputs: list[str | Path], out: str | Path, config=None) -> Path:
    """Write ``report.md``, CSV tables and figures (PNG + SVG) for the results in ``inputs``."""
    from .plots import make_figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = list(load_results(inputs).values())
    if config is not None:  # only the trials of this config (a results file may hold older ones)
        ids = {t.id for t in config.trials}
        records = [r for r in records if r["id"] in ids]
    pubs = load_published()
    cost, quality = with_presets(cost_frame(records)), with_presets(quality_frame(records))
    name = getattr(config, "name", None) or Path(inputs[0]).name
    lines = header_lines(name, (getattr(config, "raw", {}) or {}).get("description"),
                         result_files(inputs), records)
    if not (cost.empty and quality.empty):
        lines += [PARAMS_NOTE, ""]
    cost_lines, cost = cost_section(cost, pubs, records)
    frames = set() if cost.empty else set(cost["frames"])
    lines += cost_lines + quality_section(quality, pubs, records, frames)
    lines += figure_lines(make_figures(cost, quality, out, records, pubs))
    lines += error_section(records)
    lines += ["## Sources", "", "Published numbers: `experiments/published.csv` (copied from the "
              "papers; see the note at its top).", ""]
    _write_csv(cost, out / "cost.csv")
    _write_csv(quality, out / "quality.csv")
    index = out / "report.md"
    index.write_text("\n".join(lines))
    return index


def figure_lines(figures: list[tuple[str, str]]) -> list[str]:
    """Each figure's PNG embedded, its caption, and a link to the SVG beside it."""
    if not figures:
        return []
    lines = ["## Figures", ""]
    for png, caption in figures:
        svg = str(Path(png).with_suffix(".svg"))
        lines += [f"![{png}]({png})", "", f"*{caption}* ([SVG]({svg}))", ""]
    return lines


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    drop = [c for c in ("attn_tokens",) if c in df.columns]
    df.drop(columns=drop).to_csv(path, index=False)


def _saved_config(inputs: list[str]):
    """The config a single sweep dir was run with (selects its trials), else None (all)."""
    if len(inputs) != 1 or not (Path(inputs[0]) / "config.yaml").is_file():
        return None
    from .config import ConfigError, load_config

    try:
        return load_config(Path(inputs[0]) / "config.yaml", preflight=False)
    except ConfigError as err:  # e.g. MSR-VTT data missing here: report every record instead
        log.warning("not selecting trials by %s: %s", Path(inputs[0]) / "config.yaml", err)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokred report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="result dirs or results*.jsonl files")
    p.add_argument("-o", "--out", help="report dir (default: INPUT/report for one dir)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    first = Path(a.inputs[0])
    out = Path(a.out) if a.out else (first if first.is_dir() else first.parent) / "report"
    if not result_files(a.inputs):
        print(f"no results*.jsonl in {a.inputs}", file=sys.stderr)
        return 2
    print(f"report: {write_report(a.inputs, out, config=_saved_config(a.inputs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
