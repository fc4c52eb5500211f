"""Issue 14: one test (or a few) per reported bug; each failed on the code before the fix.

1 untrusted files run code, 2 merge of missing inputs deletes the output, 3 in-place merge is
not atomic, 4 untrained models reported fine, 5 resume of another run / no checkpoint on
Ctrl-C / mixed logs, 6 seeds, 7 resume from the saved config, 8 a plugin replaces a built-in,
9 corrupt videos in short runs and at scale, 10 eval on the train split, 11 concurrent runs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_sweep import COST  # the same small cost-only config
from test_train import TINY
from tokred_experiments import cache as xcache
from tokred_experiments import sweep, trials
from tokred_experiments.config import ConfigError, load_config
from tokred_experiments.records import append_record, read_records, trial_id

from tokred import TokenReducer, register_reducer, registry
from tokred.backbones.embedded import EMBEDDED_MODELS
from tokred.backbones.weights import UnsafeCheckpointError, read_checkpoint
from tokred.cli import main
from tokred.data import VideoDecodeError, load_split
from tokred.training import TrainConfig, train
from tokred.training import loop as loop_mod
from tokred.training.loop import epoch_batches

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tokred.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    return generate(out, SynthConfig(train_videos=16, test_videos=8, frames=4, size=32, workers=1))


@pytest.fixture()
def tiny(monkeypatch):
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-test", TINY)
    return "tiny-test"


def cfg(root, out, **kw) -> TrainConfig:
    base = dict(data="msrvtt", root=str(root), out=str(out), model="tiny-test", mode="scratch",
                frames=2, batch_size=4, max_steps=6, lr=1e-2, warmup=0.2, threads=1)
    return TrainConfig(**{**base, **kw})


def train_args(root, out, *extra: str) -> list[str]:
    return ["train", "--root", str(root), "--out", str(out), "--model", "tiny-test", "--mode",
            "scratch", "--frames", "2", "--batch-size", "4", "--threads", "1", *extra]


class Evil:
    """Unpickling this creates a directory: the proof that a load ran code from the file."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def copy_synth(synth: Path, dest: Path) -> Path:
    shutil.copytree(synth, dest)
    return dest


# 1 ------------------------------------------------------------------------------------------

def test_checkpoints_that_would_run_code_are_refused_everywhere(synth, tmp_path, tiny, capsys):
    pwned = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Evil(pwned)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="--trust-pickle"):
        read_checkpoint(evil)
    with pytest.raises(UnsafeCheckpointError):
        train(cfg(synth, tmp_path / "init", init=str(evil)))
    with pytest.raises(UnsafeCheckpointError):
        train(cfg(synth, tmp_path / "pre", pretrained=str(evil)))
    run = tmp_path / "resume"
    run.mkdir()
    shutil.copy(evil, run / "last.pt")
    with pytest.raises(UnsafeCheckpointError):
        train(cfg(synth, run, resume=True))
    assert main(["eval", "--checkpoint", str(evil), "--root", str(synth)]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not pwned.exists()
    read_checkpoint(evil, trust_pickle=True)  # the explicit opt-in loads it (and runs it)
    assert pwned.is_dir()


def test_a_checkpoint_without_weights_is_named_with_the_fix(synth, tmp_path, tiny):
    odd = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), odd)  # loads safely, but is not a state dict
    with pytest.raises(ValueError, match=rf"{odd}: holds a Tensor, not CLIP weights.*state_dict"):
        train(cfg(synth, tmp_path / "run", init=str(odd)))


def test_tokreds_own_checkpoints_load_with_weights_only(synth, tmp_path, tiny):
    stats = train(cfg(synth, tmp_path / "run", max_steps=2))
    for name in ("last.pt", "model.pt"):
        torch.load(tmp_path / "run" / name, weights_only=True)
    rest = train(cfg(synth, tmp_path / "run", max_steps=2, resume=True))  # RNG state restores
    assert rest["steps"] == stats["steps"] == 2


def test_msvd_caption_pickle_is_read_as_plain_data(tmp_path):
    shutil.copytree(ROOT / "tests/fixtures/msvd", tmp_path / "msvd")
    assert len(load_split("msvd", tmp_path / "msvd", "test").videos) == 3  # plain data loads
    pwned = tmp_path / "pwned"
    with open(tmp_path / "msvd" / "raw-captions.pkl", "wb") as f:
        pickle.dump({"eyhzdC936uk_15_27": [Evil(pwned)]}, f)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_split("msvd", tmp_path / "msvd", "test")
    assert not pwned.exists()


# 2, 3 ---------------------------------------------------------------------------------------

def _results(path: Path, n: int) -> None:
    for i in range(n):
        append_record(path, {"id": f"{i:04d}", "status": "ok", "v": i})


def test_merge_refuses_missing_inputs_and_keeps_its_output(tmp_path, capsys):
    out = tmp_path / "all" / "results.jsonl"
    _results(out, 3)
    assert main(["merge", str(tmp_path / "typo"), "-o", str(out)]) == 2
    assert "typo" in capsys.readouterr().err
    assert len(read_records(out)) == 3
    (tmp_path / "empty").mkdir()
    assert main(["merge", str(tmp_path / "empty"), "-o", str(out)]) == 2
    assert len(read_records(out)) == 3


def test_in_place_merge_is_all_or_nothing(tmp_path, monkeypatch):
    from tokred_experiments import records

    big = tmp_path / "big.jsonl"
    _results(big, 50)
    before = big.read_bytes()

    def dies(fd):  # the process is killed in the middle of writing the merged file
        raise KeyboardInterrupt

    monkeypatch.setattr(records.os, "fsync", dies)
    with pytest.raises(KeyboardInterrupt):
        records.merge_files([big], big)
    monkeypatch.undo()
    assert big.read_bytes() == before
    assert records.merge_files([big, big], big) == 50 and len(read_records(big)) == 50


@pytest.mark.slow
def test_killed_in_place_merge_leaves_old_or_new_file(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"id": f"{i:05d}", "status": "ok", "pad": "x" * 400})
                           + "\n" for i in range(3000)))
    cmd = [sys.executable, "-m", "tokred.cli", "merge", str(big), "-o", str(big)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4.0)
    proc.kill()
    proc.wait()
    assert len(read_records(big)) == 3000


# 4 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("max_steps", -1), ("max_steps", 0), ("epochs", 0), ("epochs", -1), ("train_frames", 0),
    ("warmup", 5), ("weight_decay", -0.1), ("time_limit", -1), ("batch_size", 0),
])
def test_impossible_training_lengths_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_train_with_negative_steps_exits_2_without_a_model(synth, tmp_path, tiny, capsys):
    assert main(train_args(synth, tmp_path, "--max-steps", "-1")) == 2
    assert "--max-steps" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_sweep_base_recipe_with_negative_steps_stops_at_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""\
        quality:
          data: {kind: synth}
          base: {mode: scratch, max_steps: -3}
          reducers: [none]
        """))
    with pytest.raises(ConfigError, match=r"c.yaml:3.*max_steps must be a positive integer"):
        load_config(path)


# 5 ------------------------------------------------------------------------------------------

def test_resume_refuses_another_runs_checkpoint(synth, tmp_path, tiny):
    train(cfg(synth, tmp_path, stop_at_step=2))
    with pytest.raises(ValueError, match=r"reducer='none' -> 'tome'.*batch_size=4 -> 8.*"
                                         r"max_steps=6 -> 9"):
        train(cfg(synth, tmp_path, resume=True, reducer="tome", batch_size=8, max_steps=9))
    rest = train(cfg(synth, tmp_path, resume=True, threads=2, time_limit=60.0))  # run-time only
    assert rest["steps"] == 6


def test_ctrl_c_saves_a_checkpoint_and_a_fresh_run_starts_a_fresh_log(synth, tmp_path, tiny,
                                                                       monkeypatch):
    real = loop_mod.train_step
    steps = [0]

    def interrupted_at_2(*args, **kwargs):
        steps[0] += 1
        if steps[0] == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 2
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "train_step", interrupted_at_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(synth, tmp_path, save_every=0))
    monkeypatch.setattr(loop_mod, "train_step", real)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    train(cfg(synth, tmp_path, resume=True))
    log = [json.loads(x)["step"] for x in (tmp_path / "train_log.jsonl").open()]
    assert log == [1, 2, 3, 4, 5, 6]
    train(cfg(synth, tmp_path, max_steps=3))  # a new run in the same directory
    log = [json.loads(x)["step"] for x in (tmp_path / "train_log.jsonl").open()]
    assert log == [1, 2, 3]


# 6 ------------------------------------------------------------------------------------------

QUALITY = """\
seed: {seed}
quality:
  data: {{kind: synth, synth: {{train_videos: 8, test_videos: 6, frames: 4, size: 32}}}}
  base: {{mode: scratch, max_steps: 1{base_extra}}}
  reducers: [none]
  modes: [training_free]
"""


def test_recipe_seed_is_refused_at_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(QUALITY.format(seed=0, base_extra=", seed: 3"))
    with pytest.raises(ConfigError, match=r"c.yaml:4.*'seed'.*top level"):
        load_config(path)


def test_top_level_seed_reaches_the_synthetic_data(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(QUALITY.format(seed=5, base_extra=""))
    (trial,) = load_config(path).trials
    assert trial.settings["data"]["synth"]["seed"] == 5 and trial.settings["seed"] == 5
    path.write_text(QUALITY.format(seed=0, base_extra=""))
    (zero,) = load_config(path).trials
    assert "seed" not in zero.settings["data"]["synth"]  # seed 0: trial ids as before


def test_top_level_seed_reaches_the_base_model_and_its_cache_key(tmp_path, monkeypatch):
    from tokred_experiments import quality

    import tokred.training

    keys, seeds = [], []

    class Stop(Exception):
        pass

    def fake_step(cache, name, key, build):
        keys.append(key)
        return build(tmp_path / "step")

    def fake_train(config):
        seeds.append(config.seed)
        raise Stop

    monkeypatch.setattr(quality, "cached_step", fake_step)
    monkeypatch.setattr(quality, "data_dir", lambda data, ctx: tmp_path)
    monkeypatch.setattr(tokred.training, "train", fake_train)
    for seed in (0, 5):
        path = tmp_path / "c.yaml"
        path.write_text(QUALITY.format(seed=seed, base_extra=""))
        (trial,) = load_config(path).trials
        s = {**trial.settings, "data": {"kind": "msrvtt", "root": str(tmp_path)}}  # same data
        with pytest.raises(Stop):
            quality.quality_trial(s, trials.Context(out=tmp_path))
    assert seeds == [0, 5] and trial_id(keys[0]) != trial_id(keys[1])


# 7 ------------------------------------------------------------------------------------------

def test_sweep_resumes_from_its_saved_config(tmp_path, monkeypatch):
    monkeypatch.setattr(trials, "cost_trial", lambda s, ctx: {"gmacs": 1.0, "tokens_out": 1})
    (tmp_path / "c.yaml").write_text(COST)
    out = tmp_path / "out"
    args = ["--out", str(out), "--no-report", "--no-progress"]
    assert sweep.main(["--config", str(tmp_path / "c.yaml"), *args]) == 0
    assert sweep.main(["--config", str(out / "config.yaml"), *args]) == 0
    assert len(read_records(out / "results.jsonl")) == 4


# 8 ------------------------------------------------------------------------------------------

def test_a_plugin_cannot_take_a_builtin_name_before_the_builtins_load(monkeypatch):
    monkeypatch.delitem(registry._REGISTRY, "tome", raising=False)  # built-ins not imported yet
    with pytest.raises(ValueError, match=r"'tome' belongs to tokred_methods.tome:ToMe "
                                         r"\(distribution tokred.*must use another name"):
        @register_reducer("tome")
        class Impostor(TokenReducer):
            pass
    assert "tome" not in registry._REGISTRY


def test_an_entry_point_naming_a_builtin_is_refused_naming_both_distributions(monkeypatch):
    from importlib import metadata

    real = metadata.entry_points(group=registry.GROUP)
    evil = SimpleNamespace(name="tome", value="evil_pkg.mod:Tome", module="evil_pkg.mod",
                           attr="Tome", dist=SimpleNamespace(name="evil-dist"))
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [*real, evil])
    with pytest.raises(ValueError, match=r"tokred \(tokred_methods.tome:ToMe\) and evil-dist"):
        registry.list_reducers()


# 9 ------------------------------------------------------------------------------------------

def _video_in_batch(root: Path, batch: int) -> str:
    """Id of a video the run of :func:`cfg` (batch 4, seed 0) uses in step ``batch`` only."""
    split = load_split("msrvtt", root, "train")
    batches = epoch_batches(len(split.videos), 4, loop_mod.D.DistInfo(), 0, 0)
    early = {v for b in batches[:batch] for v in b}
    return split.videos[next(v for v in batches[batch] if v not in early)].id


def test_zero_byte_video_stops_a_one_step_run_before_step_1(synth, tmp_path, tiny):
    root = copy_synth(synth, tmp_path / "data")
    bad = _video_in_batch(root, 3)  # not used by step 1
    (root / "videos" / f"{bad}.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=f"{bad}.*--bad-videos"):
        train(cfg(root, tmp_path / "run", max_steps=1))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_corrupt_video_of_step_3_is_found_before_step_1_or_saved_before_step_3(synth, tmp_path,
                                                                              tiny):
    root = copy_synth(synth, tmp_path / "data")
    bad = _video_in_batch(root, 2)
    (root / "videos" / f"{bad}.mp4").write_bytes(b"\x00" * 300)
    with pytest.raises(VideoDecodeError, match=f"(?s)nothing trained yet.*{bad}"):
        train(cfg(root, tmp_path / "cached", max_steps=3))
    assert not (tmp_path / "cached" / "last.pt").exists()
    with pytest.raises(VideoDecodeError, match=r"before step 3.*holds step 2"):
        train(cfg(root, tmp_path / "uncached", max_steps=3, cache=False))
    assert torch.load(tmp_path / "uncached" / "last.pt", weights_only=True)["step"] == 2


def test_skip_errors_works_without_the_clip_cache(synth, tmp_path, tiny, monkeypatch):
    from tokred.training import cache as cache_mod

    root = copy_synth(synth, tmp_path / "data")
    (root / "videos" / "video5.mp4").write_bytes(b"\x00" * 300)
    monkeypatch.setattr(cache_mod, "cache_limit", lambda: 0)  # MSR-VTT scale: nothing fits
    stats = train(cfg(root, tmp_path / "run", skip_errors=True))
    assert stats["steps"] == 6 and stats["skipped_videos"] == 1
    assert stats["skipped_ids"] == ["video5"]


def test_data_check_lists_bad_videos_and_training_leaves_them_out(synth, tmp_path, tiny, capsys):
    root = copy_synth(synth, tmp_path / "data")
    (root / "videos" / "video5.mp4").write_bytes(b"\x00" * 300)
    (root / "videos" / "video9.mp4").write_bytes(b"")
    bad = tmp_path / "bad.txt"
    assert main(["data", "check", str(root), "--frames", "4", "--workers", "2", "--out",
                 str(bad), "--no-progress"]) == 1
    assert [line.split("\t")[0] for line in bad.read_text().splitlines()] == ["video5", "video9"]
    assert "2 of 16 videos cannot be decoded" in capsys.readouterr().out
    stats = train(cfg(root, tmp_path / "run", bad_videos=str(bad), cache=False))
    assert stats["steps"] == 6 and stats["skipped_videos"] == 0


# 10 -----------------------------------------------------------------------------------------

def test_eval_of_the_synthetic_train_split_and_stray_reducer_options(synth, tmp_path, tiny,
                                                                     capsys):
    ck = train(cfg(synth, tmp_path / "run", max_steps=1))["checkpoint"]
    assert main(["eval", "--checkpoint", ck, "--root", str(synth), "--split", "train"]) == 0
    out = capsys.readouterr().out  # no --frames: the checkpoint's 2, not 12
    assert "msrvtt/train" in out and "videos, 2 frames each" in out
    assert main(["eval", "--checkpoint", ck, "--root", str(synth), "--reducer-options",
                 '{"r": 2}']) == 2
    assert "--reducer-options needs --reducer" in capsys.readouterr().err


# 11 -----------------------------------------------------------------------------------------

def test_a_trial_claimed_by_a_live_process_is_left_to_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trials, "cost_trial", lambda s, ctx: {"gmacs": 1.0, "tokens_out": 1})
    (tmp_path / "c.yaml").write_text(COST)
    config, out = load_config(tmp_path / "c.yaml"), tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "claims").mkdir(parents=True)
        taken = config.trials[0].id
        (out / "claims" / f"{taken}.claim").write_text(json.dumps(
            {"pid": other.pid, "host": socket.gethostname(), "since": "earlier",
             "start": xcache._start_time(other.pid)}))
        assert sweep.run_sweep(config, out, progress=False) == {"ok": 3, "error": 0}
        assert f"pid {other.pid}" in capsys.readouterr().out
    finally:
        other.kill()
        other.wait()
    assert sweep.run_sweep(config, out, progress=False) == {"ok": 1, "error": 0}  # stale: taken
    ids = [r["id"] for r in read_records(out / "results.jsonl")]
    assert sorted(ids) == sorted(t.id for t in config.trials)  # every trial once
    assert not list((out / "claims").glob("*.claim"))


@pytest.mark.slow
def test_two_unsharded_runs_on_one_output_run_every_trial_once(tmp_path):
    (tmp_path / "c.yaml").write_text(COST)
    cmd = [sys.executable, "-m", "tokred_experiments.sweep", "--config", str(tmp_path / "c.yaml"),
           "--out", str(tmp_path / "out"), "--no-report", "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    ids = [r["id"] for r in read_records(tmp_path / "out" / "results.jsonl")]
    assert sorted(ids) == sorted(t.id for t in load_config(tmp_path / "c.yaml").trials)


def test_waiting_on_a_stopped_lock_holder_says_who_and_what_to_do(tmp_path, caplog,
                                                                 monkeypatch):
    key = {"k": 1}
    lock = tmp_path / f".base-{trial_id(key)}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import time
            from tokred_experiments.cache import wait_for_lock
            f = open({str(lock)!r}, "a+")
            wait_for_lock(f, "test")
            print("locked", flush=True)
            time.sleep(60)
            """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.kill(holder.pid, signal.SIGSTOP)
        deadline = time.time() + 10
        while xcache._proc_state(holder.pid) not in ("T", "t") and time.time() < deadline:
            time.sleep(0.05)  # the signal is delivered asynchronously
        built = []
        waiter = threading.Thread(target=xcache.cached_step,
                                  args=(tmp_path, "base", key, lambda d: built.append(d)))
        with caplog.at_level("WARNING", logger=xcache.log.name):
            waiter.start()
            time.sleep(1.5)
            text = caplog.text
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait()
    waiter.join(timeout=30)
    assert f"pid {holder.pid} on {socket.gethostname()}" in text
    assert "stopped" in text and f"kill -CONT {holder.pid}" in text
    assert built  # the step ran once the holder was gone
