"""Dataset readers on small fixtures in each dataset's real file format."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tokred.data import Split, check_files, load_split

FIX = Path(__file__).parent / "fixtures"


def _mapping(split: Split) -> dict[str, list[str]]:
    caps = split.video_captions()
    return {v.id: [split.captions[c] for c in caps[i]] for i, v in enumerate(split.videos)}


def test_msrvtt_test_one_caption_per_video(tmp_path: Path) -> None:
    s = load_split("msrvtt", FIX / "msrvtt", "test", video_root=tmp_path)
    assert (len(s.videos), len(s.captions)) == (5, 5)
    assert s.videos[0].id == "video9770" and s.videos[0].path == tmp_path / "video9770.mp4"
    assert s.captions[1] == "a little girl does gymnastics"
    assert s.caption_video == [0, 1, 2, 3, 4]


def test_msrvtt_train_multi_caption() -> None:
    s = load_split("msrvtt", FIX / "msrvtt", "train")
    m = _mapping(s)
    assert set(m) == {"video0", "video1", "video2"}
    assert len(m["video0"]) == 3 and m["video2"] == ["a cartoon dog runs"]
    assert len(s.captions) == 6
    assert s.videos[0].path == FIX / "msrvtt" / "videos" / "video0.mp4"  # default video root
    assert {v.id for v in load_split("msrvtt", FIX / "msrvtt", "train7k").videos} == {
        "video0",
        "video1000",
    }


def test_msvd_all_captions_kept() -> None:
    s = load_split("msvd", FIX / "msvd", "test", video_root="/videos")
    assert [v.id for v in s.videos] == [
        "eyhzdC936uk_15_27",
        "f-24IxG9ijw_25_40",
        "f9Won2JpOEU_60_80",
    ]
    assert s.videos[0].path == Path("/videos/eyhzdC936uk_15_27.avi")
    assert [len(c) for c in s.video_captions()] == [1, 2, 3]  # 1 + n % 3 in the fixture
    assert s.captions[0].startswith("a man is doing thing")


def test_msvd_missing_captions_names_the_pickle(tmp_path: Path) -> None:
    shutil.copytree(FIX / "msvd", tmp_path, dirs_exist_ok=True)
    (tmp_path / "test_list.txt").write_text("not_a_real_id\n")
    with pytest.raises(ValueError, match="raw-captions.pkl"):
        load_split("msvd", tmp_path, "test")


def test_didemo_paragraphs() -> None:
    s = load_split("didemo", FIX / "didemo", "train", video_root="/v")
    assert len(s.videos) == 2 and len(s.captions) == 2
    assert (
        s.captions[0] == "a dog jumps into the water the dog swims back the dog shakes itself dry"
    )
    assert s.videos[0].path == Path("/v/10015567@N08_3655084291_d8b58466fa.mov")
    assert len(load_split("didemo", FIX / "didemo", "test").captions) == 1


def test_didemo_resolves_converted_mp4(tmp_path: Path) -> None:
    (tmp_path / "10043034@N03_4289467744_85e1fc2e2e.mp4").write_bytes(b"x")
    s = load_split("didemo", FIX / "didemo", "test", video_root=tmp_path)
    assert s.videos[0].path.suffix == ".mp4"


def test_activitynet_paragraphs_and_missing_ids(tmp_path: Path) -> None:
    (tmp_path / "v_PLek2e8NlKc.mkv").write_bytes(b"x")
    s = load_split("activitynet", FIX / "activitynet", "val", video_root=tmp_path)
    # val_ids.json lists 4 ids; one has no entry in val_1.json and is skipped
    assert [v.id for v in s.videos] == ["v_JDg--pjY5gg", "v_PLek2e8NlKc", "v__uOfIm1tFcI"]
    assert s.videos[0].path.name == "v_JDg--pjY5gg.mp4" and s.videos[1].path.suffix == ".mkv"
    assert len(s.captions) == 3 and "  " not in s.captions[0]
    train = load_split("activitynet", FIX / "activitynet", "train")
    assert len(train.videos) == 3 and train.captions[0].count(".") >= 9  # 10 sentences joined


def test_lsmdc_paths_and_grouping() -> None:
    s = load_split("lsmdc", FIX / "lsmdc", "test", video_root="/lsmdc")
    assert (len(s.videos), len(s.captions)) == (5, 5)
    v = s.videos[3]
    assert v.path == Path(
        "/lsmdc/1054_Harry_Potter_and_the_prisoner_of_azkaban/"
        "1054_Harry_Potter_and_the_prisoner_of_azkaban_01.44.29.000-01.44.31.167.avi"
    )
    assert s.captions[0] == "SOMEONE stands below, hands on her hips."
    train = load_split("lsmdc", FIX / "lsmdc", "train")
    assert len(train.videos) == 2 and train.caption_video == [0, 1, 0]


def test_table_csv_and_jsonl(tmp_path: Path) -> None:
    s = load_split("csv", FIX / "table", "train")
    assert [v.id for v in s.videos] == ["clips/a.mp4", "clips/b.mp4"]
    assert s.caption_video == [0, 1, 0] and s.captions[2] == "a cat, asleep on a sofa"
    assert s.videos[0].path == FIX / "table" / "clips" / "a.mp4"
    j = load_split("jsonl", FIX / "table" / "test.jsonl", video_root=tmp_path)
    assert j.videos[1].path == tmp_path / "clips" / "c.mp4" and len(j.captions) == 2


def test_unknown_kind_lists_available() -> None:
    with pytest.raises(ValueError, match="available: .*msrvtt"):
        load_split("msr-vtt", FIX / "msrvtt", "test")


def test_unknown_split_lists_available() -> None:
    with pytest.raises(ValueError, match="train7k"):
        load_split("msrvtt", FIX / "msrvtt", "val")


def test_missing_annotation_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="MSRVTT_JSFUSION_test.csv"):
        load_split("msrvtt", tmp_path, "test")


def test_check_files_reports_every_missing_video(tmp_path: Path) -> None:
    s = load_split("msrvtt", FIX / "msrvtt", "test", video_root=tmp_path)
    check_files(Split(s.name, s.videos[:0], [], [], tmp_path))  # empty split is fine
    (tmp_path / "video9771.mp4").write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as err:
        check_files(s)
    msg = str(err.value)
    assert "4 of 5" in msg and str(tmp_path) in msg
    for vid in ("video9770", "video7020", "video9773", "video7026"):
        assert vid in msg
    assert "video9771" not in msg
    for v in s.videos:
        v.path.write_bytes(b"x")
    check_files(s)


def test_check_files_truncates_long_lists(tmp_path: Path) -> None:
    s = load_split("csv", FIX / "table", "train", video_root=tmp_path)
    many = Split("big", s.videos * 12, [], [], tmp_path)
    with pytest.raises(FileNotFoundError, match="and 14 more"):
        check_files(many)
