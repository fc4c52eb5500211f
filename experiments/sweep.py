"""Run a sweep config: expand into trials, run the unfinished ones, append results, report.

Usage::

    tokred sweep --config experiments/configs/default.yaml --out runs/default
    tokred sweep --config smoke --out runs/smoke          # a shipped config, by name
    tokred sweep --config smoke --out runs/s2 quality.base.max_steps=20 cost.runs.0.repeats=2
    tokred sweep --config ... --out ... --plugin my_reducer.py   # reducers from a local file
    tokred sweep --config ... --out ... --shard 0/2      # half of the trials
    tokred sweep --config ... --out ... --cost-only      # skip the quality part
    tokred sweep --config ... --out ... --only-report    # tables + figures only
    tokred merge runs/a runs/b --out runs/all/results.jsonl

Resumable: finished trials (status ok) are skipped on a rerun; errored ones are retried.
OUT/config.yaml is the effective config (overrides applied), OUT/sweep.log the run's log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from tokred.cli.args import (
    HelpFormatter,
    add_compute_flags,
    existing_path,
    output_dir,
    output_file,
    resolve_device,
    using_threads,
)

from .cache import claim, describe
from .config import CONFIGS, ConfigError, SweepConfig, find_config, load_config
from .records import FinishedTrials, append_record, merge_files
from .runlog import Note, sweep_log
from .trial import Trial

log = logging.getLogger(__name__)  # under the package logger runlog.sweep_log captures


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/2), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_arg(text: str) -> tuple[int, int]:
    """argparse ``type=`` of ``--shard``."""
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--shard ")) from None


def in_shard(trial: Trial, shard: tuple[int, int] | None) -> bool:
    """Deterministic assignment of a trial to a shard by its id."""
    return shard is None or int(trial.id, 16) % shard[1] == shard[0]


def results_path(out: Path, shard: tuple[int, int] | None) -> Path:
    """``results.jsonl``, or one file per shard so shards never share a writer."""
    return out / ("results.jsonl" if shard is None else f"results.shard-{shard[0]}-of-{shard[1]}.jsonl")


def pending(cfg: SweepConfig, out: Path, shard: tuple[int, int] | None,
            done: FinishedTrials | None = None) -> list[Trial]:
    """Trials of this shard without an ``ok`` record in any results file of ``out`` (``done``:
    the reader of those records to bring up to date, kept by a caller that asks again)."""
    finished = (done or FinishedTrials(out)).refresh()
    return [t for t in cfg.trials if in_shard(t, shard) and t.id not in finished]


def run_one(trial: Trial, ctx, cfg: SweepConfig, extra: dict) -> dict:
    """Run a trial and build its record (never raises for a trial failure)."""
    from .trials import run_trial

    t0, started = time.perf_counter(), dt.datetime.now(dt.timezone.utc).isoformat()
    cpu0 = time.process_time()
    record = {"id": trial.id, "kind": trial.kind, "settings": trial.settings, "config": cfg.name,
              "label": cfg.label, "started": started, **extra}
    try:
        record.update(status="ok", metrics=run_trial(trial, ctx))
    except KeyboardInterrupt:
        raise
    except Exception as err:  # recorded; the sweep goes on and a rerun retries it
        tb = traceback.format_exc(limit=-6)
        log.error("trial %s (%s) failed: %s", trial.id, trial.title, err)
        record.update(status="error", error=f"{type(err).__name__}: {err}", traceback=tb)
    record["seconds"] = time.perf_counter() - t0
    record["cpu_seconds"] = time.process_time() - cpu0  # all threads; wall time on a shared box
    return record


def run_sweep(cfg: SweepConfig, out: Path, shard: tuple[int, int] | None = None,
              device: str = "cpu", progress: bool = True,
              argv: list[str] | None = None) -> dict[str, int]:
    """Run the pending trials of ``cfg`` into ``out``; returns counts by status.

    Every record carries the run's ``provenance`` (:func:`tokred.plugins.run_provenance` of
    ``device`` and the command line ``argv``, default ``sys.argv``, with the config's seed and
    its plugin files); ``OUT/sweep.log`` gets the run's log (:func:`~.runlog.sweep_log`).
    """
    from tokred.plugins import run_provenance

    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    prov = run_provenance(device, argv, cfg.plugins, seed=cfg.raw.get("seed", 0))
    extra = {"provenance": prov, "device": device,
             "shard": None if shard is None else f"{shard[0]}/{shard[1]}"}
    with sweep_log(out, prov) as note:
        t0, cpu0 = time.perf_counter(), time.process_time()
        counts = _run_pending(cfg, out, shard, extra, progress, note)
        note(f"ran {sum(counts.values())} trials in {time.perf_counter() - t0:.0f} s wall, "
             f"{time.process_time() - cpu0:.0f} s CPU: {counts['ok']} ok, "
             f"{counts['error']} errors")
    return counts


def _run_pending(cfg: SweepConfig, out: Path, shard: tuple[int, int] | None, extra: dict,
                 progress: bool, note: Note) -> dict[str, int]:
    """Claim and run each pending trial of this shard (:func:`~.cache.claim`): one another
    process on ``out`` is running is left to it (and named at the end), one finished
    meanwhile is skipped."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .trials import Context

    done = FinishedTrials(out)  # each later refresh reads only the records written since
    todo = pending(cfg, out, shard, done)
    mine = sum(in_shard(t, shard) for t in cfg.trials)
    note(f"{cfg.name}: {len(cfg.trials)} trials, {mine} in this shard, {mine - len(todo)} "
         f"already done, {len(todo)} to run -> {out}")
    ctx = Context(out=out, device=extra["device"], keep=cfg.keep)
    counts, busy, path = {"ok": 0, "error": 0}, [], results_path(out, shard)
    with logging_redirect_tqdm(), tqdm(todo, unit="trial", disable=not progress,
                                       dynamic_ncols=True) as bar:
        for trial in bar:
            bar.set_description(trial.title[:60])
            with claim(out, trial.id) as other:
                if other is not None:
                    busy.append(f"{trial.title}: {describe(other)}, claim "
                                f"{out / 'claims' / (trial.id + '.claim')}")
                    continue
                # finished by another process after this one listed the trials: its record
                # was written before it gave up the claim this process now holds
                if trial.id in done.refresh():
                    continue
                record = run_one(trial, ctx, cfg, extra)
                append_record(path, record)
            counts[record["status"]] += 1
            note(f"trial {trial.id} ({trial.title}): {record['status']} in "
                 f"{record['seconds']:.1f} s", show=False)
            bar.set_postfix(ok=counts["ok"], errors=counts["error"])
    if busy:
        note(f"{len(busy)} trials are being run by other processes on {out}, left to them "
             f"(rerun this command afterwards to retry any that did not finish; a claim of a "
             f"process on another host that is gone must be deleted by hand):\n  "
             + "\n  ".join(busy))
    return counts


def save_config(cfg: SweepConfig, out: Path) -> None:
    """Write the effective config to ``out/config.yaml`` (the report reads it to select
    trials; a rerun may resume from it), atomically: the file itself when no override or
    plugin path changed it (nothing to do when the run was started from that very file), else
    the effective YAML (:attr:`SweepConfig.text`) under a comment naming its source."""
    dest = out / "config.yaml"
    if cfg.text is None and dest.exists() and os.path.samefile(cfg.path, dest):
        return
    tmp = out / f".config.yaml.tmp-{os.getpid()}"
    if cfg.text is None:
        shutil.copyfile(cfg.path, tmp)
    else:
        changes = "".join(f"\n#   {item}" for item in cfg.overrides)
        tmp.write_text(f"# Effective config of a tokred sweep: {cfg.path}"
                       + (f" with the overrides{changes}" if changes else "")
                       + "\n# (plugin paths made absolute; the file's comments are not kept)\n"
                       + cfg.text)
    os.replace(tmp, dest)


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokred merge", formatter_class=HelpFormatter,
                                description="merge result files or dirs (one record per trial)")
    p.add_argument("inputs", nargs="+", type=existing_path,
                   help="results.jsonl files or output dirs")
    # required, checked in merge_main: argparse would not count the old spelling --output
    p.add_argument("-o", "--out", type=output_file,
                   help="merged results.jsonl to write (replaced atomically; may be an input; "
                   "required)")
    p.add_argument("--output", dest="out", type=output_file,  # the old spelling, one release
                   help=argparse.SUPPRESS)
    return p


def merge_main(argv: list[str]) -> int:
    """``tokred merge INPUT... --out FILE``: one record per trial; every input must exist."""
    p = merge_parser()
    a = p.parse_args(argv)
    if a.out is None:
        p.error("the following arguments are required: -o/--out")
    n = merge_files(a.inputs, a.out)
    print(f"merged {n} trials into {a.out}")
    return 0


def config_arg(text: str) -> Path:
    """argparse ``type=`` of ``--config``: a file, or a shipped config's name."""
    try:
        return find_config(text)
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parser() -> argparse.ArgumentParser:
    shipped = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
    p = argparse.ArgumentParser(prog="tokred sweep", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, type=config_arg,
                   help=f"sweep YAML file, or the bare name of a shipped config ({shipped}; "
                   f"resolved from the installed package's configs, {CONFIGS})")
    p.add_argument("--out", required=True, type=output_dir,
                   help="output dir: results.jsonl, config.yaml, sweep.log, cache/, report/")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="change one config value for this run, after the options: a dotted "
                   "path (list items by index) and a YAML value, e.g. "
                   "quality.base.max_steps=20 cost.runs.0.repeats=2; checked like the file")
    p.add_argument("--shard", type=shard_arg,
                   help="run only shard i of n (i/n, 0-based), e.g. 0/2 (default: all trials)")
    p.add_argument("--cost-only", action="store_true", help="skip the quality section")
    p.add_argument("--only-report", action="store_true", help="write tables/figures and exit")
    p.add_argument("--no-report", action="store_true", help="do not write the report")
    add_compute_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``tokred sweep``: run a config's pending trials into ``--out``, then its report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    a = parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # random weights are intended in cost trials
        handler.addFilter(lambda r: not r.getMessage().startswith("No pretrained weights"))
    out, shard = a.out, a.shard
    try:
        cfg = load_config(a.config, cost_only=a.cost_only, preflight=not a.only_report,
                          overrides=a.overrides, plugins=a.plugin)
    except (ConfigError, ValueError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    counts = {"error": 0}
    if not a.only_report:
        with using_threads(a.threads):
            counts = run_sweep(cfg, out, shard, resolve_device(a.device),
                               progress=not a.no_progress, argv=["tokred", "sweep", *argv])
    if not a.no_report and (shard is None or a.only_report):
        from .report import write_report

        index = write_report([out], out / "report", config=cfg)
        print(f"report: {index}")
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
