"""Training loop: bf16 on CPU, exact resume, batches per rank, checks before training, LoRA."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch
from test_ddp import CAPTIONS, tiny_clip

from tokred.backbones.embedded import EMBEDDED_MODELS
from tokred.cli.train import config_from_args
from tokred.retrieval import RetrievalModel
from tokred.retrieval.evaluate import embed_split, load_model
from tokred.training import TrainConfig, train
from tokred.training import distributed as D
from tokred.training.loop import epoch_batches, train_step
from tokred.training.optim import configure_trainable, make_optimizer

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tokred.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    return generate(out, SynthConfig(train_videos=16, test_videos=8, frames=4, size=32, workers=1))


@pytest.fixture()
def tiny(monkeypatch):
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-test", TINY)
    return "tiny-test"


def _cfg(synth, out, **kw) -> TrainConfig:
    base = dict(
        data="msrvtt",
        root=str(synth),
        out=str(out),
        model="tiny-test",
        mode="scratch",
        frames=2,
        batch_size=4,
        max_steps=6,
        lr=1e-2,
        warmup=0.2,
        threads=1,
    )
    return TrainConfig(**{**base, **kw})


def test_bf16_autocast_step_on_cpu():
    torch.manual_seed(0)
    model = RetrievalModel(tiny_clip(), None, frames=2)
    configure_trainable(model, "scratch")
    opt = make_optimizer(model, 1e-3, (0.9, 0.98), 0.2)
    before = model.clip.visual.proj.detach().clone()
    batch = {"frames": torch.randn(4, 2, 3, 16, 16), "caption": CAPTIONS}
    cfg = TrainConfig(mode="scratch", precision="bf16")
    loss = train_step(model, [batch], opt, None, cfg, D.DistInfo(), model.tokenizer)
    assert 0.5 < loss < 5.0  # ~log(4) at random init
    assert model.clip.visual.proj.dtype == torch.float32
    assert not torch.equal(model.clip.visual.proj, before)
    with pytest.raises(ValueError, match="bf16"):
        train_step(
            model, [batch], opt, None, replace(cfg, precision="fp16"), D.DistInfo(), model.tokenizer
        )


def test_resume_continues_at_the_right_step_and_matches(synth, tmp_path, tiny):
    full = train(_cfg(synth, tmp_path / "full"))
    part = train(_cfg(synth, tmp_path / "part", stop_at_step=3))
    assert part["steps"] == 3 and part["stopped"] == "stop_at_step=3"
    rest = train(_cfg(synth, tmp_path / "part", resume=True))
    assert full["steps"] == rest["steps"] == 6
    log = [json.loads(x)["step"] for x in (tmp_path / "part" / "train_log.jsonl").open()]
    assert log == [1, 2, 3, 4, 5, 6]
    assert rest["losses"] == pytest.approx(full["losses"][3:], abs=1e-6)
    a = torch.load(full["checkpoint"])["model"]
    b = torch.load(rest["checkpoint"])["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)


def test_time_limit_is_a_recorded_safety_stop(synth, tmp_path, tiny):
    # the schedule is the recipe's (6 steps); the limit stops early, saves and says so
    stats = train(_cfg(synth, tmp_path, time_limit=1e-9))
    assert stats["steps"] == 1 and stats["total_steps"] == 6
    assert stats["stopped"] == "time_limit=1e-09min"
    assert (tmp_path / "last.pt").is_file()
    full = train(_cfg(synth, tmp_path / "full"))
    assert full["stopped"] is None and full["steps"] == 6
    assert full["losses"][0] == pytest.approx(stats["losses"][0])  # same first step


def test_missing_video_is_named_before_training(synth, tmp_path, tiny):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    os.remove(root / "videos" / "video3.mp4")
    with pytest.raises(FileNotFoundError, match="video3"):
        train(_cfg(root, tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_corrupt_video_stops_before_training_or_is_skipped(synth, tmp_path, tiny, caplog):
    import shutil

    from tokred.data import VideoDecodeError

    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    (root / "videos" / "video5.mp4").write_bytes(b"\x00" * 300)  # not a video any more
    with pytest.raises(VideoDecodeError, match="video5"):
        train(_cfg(root, tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pt").exists()
    with caplog.at_level("WARNING", logger="tokred.training"):
        stats = train(_cfg(root, tmp_path / "skip", skip_errors=True))
    assert stats["steps"] == 6
    assert "leaving out 1 undecodable training videos: video5" in caplog.text
    stats = train(_cfg(root, tmp_path / "nocache", skip_errors=True, cache=False))
    assert stats["steps"] == 6 and stats["skipped_ids"] == ["video5"]  # replaced, counted


def test_epoch_batches_split_one_global_permutation_over_ranks():
    one = epoch_batches(10, 4, D.DistInfo(), seed=1, epoch=0)
    two = [epoch_batches(10, 2, D.DistInfo(rank=r, world=2), seed=1, epoch=0) for r in (0, 1)]
    assert len(one) == 2 and all(len(b) == 4 for b in one)  # drop_last
    assert [two[0][i] + two[1][i] for i in range(2)] == one
    assert epoch_batches(10, 4, D.DistInfo(), 1, 1) != one  # reshuffled per epoch


def test_cli_flags_map_onto_config():
    cfg = config_from_args(
        [
            "--mode",
            "lora",
            "--reducer",
            "tome",
            "--reducer-options",
            '{"r": 2}',
            "--batch-size",
            "64",
            "--no-cache",
            "--resume",
        ]
    )
    assert (cfg.mode, cfg.reducer, cfg.reducer_options, cfg.batch_size) == (
        "lora",
        "tome",
        {"r": 2},
        64,
    )
    assert cfg.lr == 6e-4 and cfg.betas == (0.9, 0.999) and cfg.freeze_logit_scale
    assert cfg.cache is False and cfg.resume is True
    assert TrainConfig(mode="full").lr == 5e-6 and TrainConfig(mode="full").betas == (0.9, 0.98)
    with pytest.raises(ValueError, match="mode must be"):
        TrainConfig(mode="partial")


def test_lora_finetune_saves_folded_weights_that_reload_equal(synth, tmp_path, tiny):
    from tokred.data import load_split

    base = train(_cfg(synth, tmp_path / "base", max_steps=2))
    cfg = _cfg(
        synth,
        tmp_path / "lora",
        mode="lora",
        lora_rank=2,
        init=base["checkpoint"],
        max_steps=3,
        lr=5e-2,
    )
    stats = train(cfg)
    split = load_split("msrvtt", synth, "test")
    videos = torch.randn(len(split.videos), 2, 3, 16, 16)
    tuned = load_model(stats["checkpoint"])
    start = load_model(base["checkpoint"])
    assert not any("parametrizations" in k for k in tuned.clip.state_dict())
    t1, v1 = embed_split(tuned, split.captions, videos)
    t0, v0 = embed_split(start, split.captions, videos)
    assert (v1 - v0).abs().max() > 1e-4  # the adapters changed the model
    # only qkv weights differ between base and folded LoRA checkpoints
    a, b = torch.load(base["checkpoint"])["model"], torch.load(stats["checkpoint"])["model"]
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.endswith("attn.in_proj_weight") for k in changed)


def test_patch_dropout_drops_patches_in_training_only(tiny):
    from tokred.training.build import build_for_training

    torch.manual_seed(0)
    plain = build_for_training(TrainConfig(model=tiny, mode="scratch", frames=2), "cpu")
    model = build_for_training(
        TrainConfig(model=tiny, mode="scratch", frames=2, patch_dropout=0.5), "cpu"
    )
    model.load_model_state(plain.model_state())
    model.train()  # 2x2 grid: keeps int(4 * 0.5) = 2 patches + CLS per frame
    assert model.video.trace(frames=2).attn_tokens() == [2 * 3, 2 * 3]
    model.eval()
    assert model.video.trace(frames=2).attn_tokens() == [2 * 5, 2 * 5]
    video = torch.randn(3, 2, 3, 16, 16)
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_video(video), plain.encode_video(video))


def test_patch_dropout_needs_reducer_none_and_a_fraction():
    with pytest.raises(ValueError, match="reducer 'none'"):
        TrainConfig(reducer="tome", patch_dropout=0.5)
    with pytest.raises(ValueError, match=r"patch_dropout must be in \[0, 1\)"):
        TrainConfig(patch_dropout=1.0)


def test_reducer_with_sites_refuses_a_patch_dropped_backbone():
    from open_clip.transformer import PatchDropout

    from tokred.registry import create_reducer

    model = RetrievalModel(tiny_clip(), create_reducer("tome", r=1), frames=2)
    model.clip.visual.patch_dropout = PatchDropout(0.5)
    model.train()
    with pytest.raises(ValueError, match="patch dropout"):
        model.encode_video(torch.randn(1, 2, 3, 16, 16))
    model.eval()
    assert model.encode_video(torch.randn(1, 2, 3, 16, 16)).shape == (1, 16)


def test_training_with_patch_dropout_runs_and_saves(synth, tmp_path, tiny):
    stats = train(_cfg(synth, tmp_path / "pd", patch_dropout=0.5))
    assert stats["steps"] == 6 and torch.isfinite(torch.tensor(stats["loss"]))
    model = load_model(stats["checkpoint"], "none", {}, frames=2)
    assert model.video.trace(frames=2).attn_tokens() == [2 * 5, 2 * 5]  # loads without dropout


def test_frame_pool_feeds_jittered_frames_to_training(synth, tmp_path, tiny):
    from tokred.training.cache import make_dataset

    with pytest.raises(ValueError, match="frame_pool=1 must be at least train_frames"):
        TrainConfig(frames=2, frame_pool=1)
    cfg = _cfg(synth, tmp_path / "pool", frame_pool=4)  # 4-frame videos, 2 per step
    ds = make_dataset(cfg, 16)
    assert ds[0]["frames"].shape == (2, 3, 16, 16)  # the memo now holds video 0's 4 frames
    assert ds.frames[0].shape == (4, 3, 16, 16)
    ds.frames[0] = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).half()  # tagged
    picks = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        idx = tuple(ds[0]["frames"][:, 0, 0, 0].long().tolist())
        assert idx[0] in (0, 1) and idx[1] in (2, 3)
        picks.add(idx)
    assert len(picks) > 1
    stats = train(cfg)
    assert stats["steps"] == 6 and torch.isfinite(torch.tensor(stats["loss"]))
