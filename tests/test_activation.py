"""The OpenAI activation end to end: QuickGELU decided once, recorded in meta, honoured by every
path that builds or rebuilds a model (training from a CLIP file, resume, eval, cost)."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from tokred.backbones.embedded import EMBEDDED_MODELS
from tokred.backbones.weights import activation_for, activation_of, infer_clip_name
from tokred.retrieval.evaluate import load_model
from tokred.training import TrainConfig, train
from tokred.training import loop as train_mod

# OpenAI's files are TorchScript, which torch now calls deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

SCALE = "scale-B32"
CAPTIONS = ["a red circle moves left", "a small blue cross in the top left corner"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tokred.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    return generate(out, SynthConfig(train_videos=8, test_videos=6, frames=4, size=32, workers=1))


@pytest.fixture(scope="module")
def openai_clip():
    """The scale architecture as OpenAI builds CLIP: QuickGELU (open_clip keeps OpenAI's keys)."""
    torch.manual_seed(7)
    return open_clip.model.CLIP(**EMBEDDED_MODELS[SCALE], quick_gelu=True).eval()


def _write(layout: str, clip, d) -> str:
    """``clip``'s weights as a researcher has them on disk, in ``layout``."""
    sd = {k: v.clone() for k, v in clip.state_dict().items()}
    if layout == "openai":
        path = d / "ViT-scale.pt"
        torch.save(sd, path)
    elif layout == "clip4clip":  # CLIP4Clip's trainer: DDP prefix, a head outside CLIP
        path = d / "pytorch_model.bin.2"
        extra = {"module.loss_fct.weight": torch.zeros(1)}
        torch.save({"state_dict": {**{f"module.clip.{k}": v for k, v in sd.items()}, **extra}},
                   path)
    elif layout == "clip4clip_bare":
        path = d / "pytorch_model.bin.0"
        torch.save({f"clip.{k}": v for k, v in sd.items()}, path)
    elif layout == "torchscript":  # OpenAI's released files are TorchScript archives
        path = d / "ViT-scale-jit.pt"
        torch.jit.save(torch.jit.script(clip), str(path))
    else:
        raise ValueError(layout)
    return str(path)


def _cfg(synth, out, **kw) -> TrainConfig:
    base = dict(data="msrvtt", root=str(synth), out=str(out), model=SCALE, mode="full",
                frames=2, batch_size=4, max_steps=1, warmup=0.0, threads=1)
    return TrainConfig(**{**base, **kw})


def _mlp_acts(clip) -> set[type]:
    return {type(b.mlp.gelu) for b in [*clip.visual.transformer.resblocks,
                                         *clip.transformer.resblocks]}


def _outputs(model, frames: int = 2):
    g = torch.Generator().manual_seed(3)
    video = torch.rand(2, frames, 3, 56, 56, generator=g)
    model.eval()
    with torch.no_grad():
        return model.encode_video(video), model.encode_text(model.tokenizer(CAPTIONS))


# ------------------------------------------------------------------------- the decision
def test_activation_for_rules(tmp_path, openai_clip):
    assert activation_for("ViT-B-32", "openai") == "quick_gelu"
    assert activation_for("ViT-B-32") == activation_for("ViT-B-16") == "quick_gelu"  # papers'
    assert activation_for("ViT-B-32", "laion2b_s34b_b79k") == "gelu"
    assert activation_for("ViT-B-32-quickgelu", "laion400m_e32") == "quick_gelu"
    assert activation_for(SCALE) == "gelu"  # trained from scratch: GELU unless asked
    assert activation_for(SCALE, quick_gelu=True) == "quick_gelu"
    assert activation_for("ViT-B-32", "openai", quick_gelu=False) == "gelu"
    with pytest.raises(ValueError, match="QuickGELU by name"):
        activation_for("ViT-B-32-quickgelu", quick_gelu=False)
    path = _write("openai", openai_clip, tmp_path)
    assert activation_for(SCALE, path) == activation_for(SCALE, init=path) == "quick_gelu"
    # a tokred checkpoint says what it is, and init wins over pretrained (its weights load last)
    torch.save({"model": {}, "meta": {"model": SCALE, "activation": "gelu"}}, tmp_path / "m.pt")
    assert activation_for(SCALE, path, init=str(tmp_path / "m.pt")) == "gelu"
    with pytest.raises(FileNotFoundError, match="init checkpoint"):
        activation_for(SCALE, init=str(tmp_path / "missing.pt"))


def test_random_papers_backbones_are_quick_gelu(clip_b32, clip_b16, clip_scale):
    assert activation_of(clip_b32) == activation_of(clip_b16) == "quick_gelu"
    assert activation_of(clip_scale) == "gelu"
    assert infer_clip_name(clip_b32.state_dict()) == "ViT-B-32"
    assert infer_clip_name(clip_b16.state_dict()) == "ViT-B-16"
    assert infer_clip_name(clip_scale.state_dict()) == SCALE


# ------------------------------------------------------------------------- training
@pytest.mark.parametrize("layout", ["openai", "clip4clip", "clip4clip_bare"])
def test_train_from_openai_file_keeps_quick_gelu(synth, tmp_path, openai_clip, layout,
                                                 monkeypatch):
    init = _write(layout, openai_clip, tmp_path)
    held = {}
    real = train_mod.save_final

    def keep(model, cfg, out, stats):
        held["model"] = model
        return real(model, cfg, out, stats)

    monkeypatch.setattr(train_mod, "save_final", keep)
    stats = train(_cfg(synth, tmp_path / "run", init=init))
    assert stats["steps"] == 1
    trained = held["model"]
    assert _mlp_acts(trained.clip) == {QuickGELU}
    ck = torch.load(stats["checkpoint"], weights_only=True)
    assert ck["meta"]["activation"] == "quick_gelu"
    assert torch.load(stats["last"], weights_only=False)["meta"]["activation"] == "quick_gelu"

    loaded = load_model(stats["checkpoint"])
    assert _mlp_acts(loaded.clip) == {QuickGELU}
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in loaded.clip.visual.transformer.resblocks)
    for a, b in zip(_outputs(loaded), _outputs(trained)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    # the same weights under GELU are another model: the check above can tell them apart
    gelu = load_model(stats["checkpoint"], quick_gelu=False)
    assert (_outputs(gelu)[0] - _outputs(trained)[0]).abs().max() > 1e-4


def test_train_with_pretrained_file_records_quick_gelu(synth, tmp_path, openai_clip):
    path = _write("openai", openai_clip, tmp_path)
    stats = train(_cfg(synth, tmp_path / "run", pretrained=path))
    assert torch.load(stats["checkpoint"], weights_only=True)["meta"]["activation"] == "quick_gelu"
    scratch = train(_cfg(synth, tmp_path / "scratch", mode="scratch"))
    meta = torch.load(scratch["checkpoint"], weights_only=True)["meta"]
    assert meta["activation"] == "gelu"
    assert _mlp_acts(load_model(scratch["checkpoint"]).clip) == {torch.nn.GELU}


def test_resume_keeps_the_activation(synth, tmp_path, openai_clip, caplog):
    init = _write("openai", openai_clip, tmp_path)
    run = tmp_path / "run"
    part = train(_cfg(synth, run, init=init, max_steps=2, stop_at_step=1))
    assert part["steps"] == 1
    with pytest.raises(ValueError, match="was trained with quick_gelu"):
        train(_cfg(synth, run, init=init, max_steps=2, resume=True, quick_gelu=False))
    # without init this config alone would build GELU; last.pt's activation wins
    with caplog.at_level("WARNING", logger="tokred.training"):
        rest = train(_cfg(synth, run, max_steps=2, resume=True))
    assert rest["steps"] == 2 and "resuming with quick_gelu" in caplog.text
    assert torch.load(rest["checkpoint"], weights_only=True)["meta"]["activation"] == "quick_gelu"
    assert _mlp_acts(load_model(rest["checkpoint"]).clip) == {QuickGELU}


def test_resume_reads_neither_init_nor_pretrained(synth, tmp_path, openai_clip):
    """last.pt replaces every weight: a resumed run does not need its init file any more."""
    init = Path(_write("openai", openai_clip, tmp_path))
    run = tmp_path / "run"
    assert train(_cfg(synth, run, init=str(init), max_steps=2, stop_at_step=1))["steps"] == 1
    init.rename(tmp_path / "moved.pt")
    rest = train(_cfg(synth, run, init=str(init), max_steps=2, resume=True))
    assert rest["steps"] == 2
    assert torch.load(rest["checkpoint"], weights_only=True)["meta"]["activation"] == "quick_gelu"


def test_old_checkpoint_without_activation_loads_gelu_with_a_warning(synth, tmp_path, caplog):
    stats = train(_cfg(synth, tmp_path / "run", mode="scratch", quick_gelu=True))
    ck = torch.load(stats["checkpoint"], weights_only=True)
    assert ck["meta"].pop("activation") == "quick_gelu"
    torch.save(ck, tmp_path / "old.pt")
    with caplog.at_level("WARNING", logger="tokred.models"):
        model = load_model(tmp_path / "old.pt")
    assert _mlp_acts(model.clip) == {torch.nn.GELU}
    assert "records no activation" in caplog.text
    assert _mlp_acts(load_model(tmp_path / "old.pt", quick_gelu=True).clip) == {QuickGELU}


# ------------------------------------------------------------------------- zero-shot eval
@pytest.mark.parametrize("layout", ["openai", "torchscript", "clip4clip"])
def test_load_model_reads_clip_files_zero_shot(tmp_path, openai_clip, layout):
    from tokred.retrieval import RetrievalModel

    model = load_model(_write(layout, openai_clip, tmp_path), frames=2)
    assert _mlp_acts(model.clip) == {QuickGELU}
    assert type(model.reducer).__name__ == "NoReduction"
    ref = RetrievalModel(openai_clip, None, frames=2)
    for a, b in zip(_outputs(model), _outputs(ref)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_eval_command_scores_clip_checkpoints(synth, tmp_path, openai_clip, capsys):
    from tokred.cli.eval import main

    common = ["--root", str(synth), "--frames", "2", "--batch-size", "4"]
    for layout, extra in [("torchscript", []),
                          ("clip4clip", ["--reducer", "tome", "--reducer-options", '{"r": 1}']),
                          ("openai", ["--model", SCALE, "--out", str(tmp_path / "ev")])]:
        assert main(["--checkpoint", _write(layout, openai_clip, tmp_path), *common, *extra]) == 0
        out = capsys.readouterr().out
        assert "(6 captions, 6 videos" in out and "R-Sum" in out, layout
    assert (tmp_path / "ev" / "metrics.json").is_file()
    stats = train(_cfg(synth, tmp_path / "run", mode="scratch"))
    with pytest.raises(ValueError, match=r"holds a scale-B32 model, not 'ViT-B-32'"):
        main(["--checkpoint", stats["checkpoint"], "--model", "ViT-B-32", *common])


def test_eval_of_an_unknown_architecture_asks_for_model(synth, tmp_path, monkeypatch):
    from tokred.cli.eval import main

    tiny = {"embed_dim": 16,
            "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2,
                           "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 1}}
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save(open_clip.model.CLIP(**tiny, quick_gelu=True).state_dict(), path)
    argv = ["--checkpoint", str(path), "--root", str(synth), "--frames", "2"]
    with pytest.raises(ValueError, match="--model NAME"):
        main(argv)
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-test", tiny)
    assert main([*argv, "--model", "tiny-test"]) == 0
    with pytest.raises(ValueError, match="shape mismatch"):
        main([*argv, "--model", SCALE])


# ------------------------------------------------------------------------- cost
def test_cost_records_name_the_activation_and_quick_gelu_costs_memory():
    from tokred.cost.measure import measure

    fast = dict(batch_sizes=(1,), fvcore=False, speed=False)
    rec = measure("ViT-B-32", "none", {}, 1, activation=False, **fast)
    assert rec["activation"] == "quick_gelu"
    quick = measure("ViT-B-32", "none", {}, 1, **fast)
    gelu = measure("ViT-B-32", "none", {}, 1, quick_gelu=False, **fast)
    assert (quick["activation"], gelu["activation"]) == ("quick_gelu", "gelu")
    # QuickGELU saves its input and the sigmoid for backward, GELU only its input
    assert quick["activation_mb_per_video_full"] > 1.1 * gelu["activation_mb_per_video_full"]
    assert measure(SCALE, "none", {}, 1, activation=False, **fast)["activation"] == "gelu"


def test_sweep_cost_trial_activation(tmp_path):
    from tokred_experiments.trials import Context, cost_activation, cost_trial

    assert cost_activation({"backbone": "ViT-B-16", "weights": "random"}) == "quick_gelu"
    assert cost_activation({"backbone": SCALE, "weights": "random"}) == "gelu"
    s = {"backbone": SCALE, "weights": "random", "reducer": "none", "options": {}, "frames": 1,
         "batch_sizes": [1], "repeats": 1, "warmup": 0, "memory": False}
    assert cost_trial(s, Context(tmp_path))["activation"] == "gelu"
