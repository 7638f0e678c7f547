"""The frame manifest over a real S3 listing (moto): filtering, natural order, episode split."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pandas as pd
import pytest

from pokevq.data.manifest import (
    COLUMNS,
    build_manifest,
    episode_ids,
    from_parquet_bytes,
    index_frames,
    natural_key,
    split_by_episode,
    summarize,
    to_parquet_bytes,
)
from pokevq.errors import NoFramesError
from pokevq.storage import LocalStorage, ObjectInfo, S3Storage

GAMES = ["game1", "game2", "game10"]
EPISODES = [f"episode{e}" for e in range(1, 11)]
FRAMES = 51  # 3 x 10 x 51 = 1530 frames: more than one page of list_objects_v2
JUNK = [
    "pokemon_frames/.DS_Store",
    "pokemon_frames/notes.txt",
    "pokemon_frames/game1/",  # folder marker
    "pokemon_frames/game1/episode1/._frame_1.png",  # AppleDouble
    "pokemon_frames/game2/episode3/.DS_Store",
    "pokemon_frames/game2/episode3/readme.md",
]
OUTSIDE = ["pokemon_frames_old/game1/episode1/frame_1.png", "checkpoints/exp/checkpoint_latest.pt"]


def frame_bytes(key: str) -> bytes:
    return key.encode() * 2


@pytest.fixture(scope="module")
def frames_bucket(moto_endpoint):
    """One populated bucket for the whole module (read-only in tests)."""
    import boto3

    name = f"pokevq-manifest-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    storage = S3Storage(name, "us-east-1", endpoint_url=moto_endpoint)
    keys = [
        f"pokemon_frames/{g}/{e}/frame_{n}.png" for g in GAMES for e in EPISODES for n in range(1, FRAMES + 1)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: storage.put_bytes(k, frame_bytes(k)), keys + JUNK + OUTSIDE))
    return storage


@pytest.fixture(scope="module")
def manifest(frames_bucket):
    return index_frames(frames_bucket, "pokemon_frames", val_fraction=0.1, seed=0)


def test_only_images_under_the_prefix(manifest):
    assert len(manifest) == len(GAMES) * len(EPISODES) * FRAMES
    assert list(manifest.columns) == COLUMNS
    keys = set(manifest["key"])
    assert not keys & set(JUNK)
    assert not keys & set(OUTSIDE)
    assert all(k.startswith("pokemon_frames/") and k.endswith(".png") for k in keys)


def test_natural_order(manifest):
    keys = manifest["key"].tolist()
    first_episode = [k for k in keys if k.startswith("pokemon_frames/game1/episode1/")]
    assert first_episode == [f"pokemon_frames/game1/episode1/frame_{n}.png" for n in range(1, FRAMES + 1)]
    assert keys.index("pokemon_frames/game1/episode1/frame_2.png") < keys.index(
        "pokemon_frames/game1/episode1/frame_10.png"
    )
    assert keys.index("pokemon_frames/game1/episode2/frame_1.png") < keys.index(
        "pokemon_frames/game1/episode10/frame_1.png"
    )
    games_in_order = list(dict.fromkeys(manifest["game"]))
    assert games_in_order == ["game1", "game2", "game10"]
    episodes_in_order = list(dict.fromkeys(manifest[manifest["game"] == "game2"]["episode"]))
    assert episodes_in_order == EPISODES
    assert keys == sorted(keys, key=natural_key)


def test_row_values(manifest):
    row = manifest[manifest["key"] == "pokemon_frames/game10/episode7/frame_33.png"].iloc[0]
    assert row["game"] == "game10"
    assert row["episode"] == "episode7"
    assert row["frame"] == 33
    assert row["size"] == len(frame_bytes(row["key"]))
    assert row["etag"] and '"' not in row["etag"]
    assert row["last_modified"].tzinfo is not None
    assert abs((datetime.now(UTC) - row["last_modified"].to_pydatetime()).total_seconds()) < 3600


def test_split_keeps_episodes_whole(manifest):
    per_episode = manifest.groupby(["game", "episode"])["split"].nunique()
    assert (per_episode == 1).all()
    assert set(manifest["split"]) == {"train", "val"}
    val_episodes = manifest[manifest["split"] == "val"][["game", "episode"]].drop_duplicates()
    assert len(val_episodes) == 3  # 10% of 30 episodes


def test_split_is_deterministic_for_a_seed(frames_bucket, manifest):
    again = index_frames(frames_bucket, "pokemon_frames/", val_fraction=0.1, seed=0)
    assert again["split"].tolist() == manifest["split"].tolist()
    assert again["key"].tolist() == manifest["key"].tolist()
    other = split_by_episode(manifest, 0.1, seed=1)
    assert other["split"].tolist() != manifest["split"].tolist()


def test_summarize_counts(manifest):
    summary = summarize(manifest)
    total = len(GAMES) * len(EPISODES) * FRAMES
    assert summary == {
        "frames": total,
        "episodes": 30,
        "games": 3,
        "train_frames": 27 * FRAMES,
        "val_frames": 3 * FRAMES,
        "train_episodes": 27,
        "val_episodes": 3,
        "bytes": sum(len(frame_bytes(k)) for k in manifest["key"]),
    }


def test_parquet_round_trip(manifest):
    data = to_parquet_bytes(manifest)
    assert data[:4] == b"PAR1"
    back = from_parquet_bytes(data)
    assert list(back.columns) == COLUMNS
    assert back["key"].tolist() == manifest["key"].tolist()
    assert back["split"].tolist() == manifest["split"].tolist()
    assert back["frame"].tolist() == manifest["frame"].tolist()
    assert back["size"].tolist() == manifest["size"].tolist()
    assert pd.api.types.is_integer_dtype(back["frame"])
    assert pd.api.types.is_integer_dtype(back["size"])
    assert pd.api.types.is_datetime64_any_dtype(back["last_modified"])
    assert (back["last_modified"] == manifest["last_modified"]).all()


# --- splits of small manifests ------------------------------------------------------


def objects(*keys: str) -> list[ObjectInfo]:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    return [ObjectInfo(key=k, size=10, etag=f"e{i}", last_modified=now) for i, k in enumerate(keys)]


def test_two_episodes_give_exactly_one_val_episode():
    frame = build_manifest(
        objects("f/g/ep1/frame_1.png", "f/g/ep1/frame_2.png", "f/g/ep2/frame_1.png", "f/g/ep2/frame_2.png"), "f"
    )
    for seed in range(5):
        split = split_by_episode(frame, 0.1, seed=seed)
        val = split[split["split"] == "val"]
        assert val["episode"].nunique() == 1
        assert len(val) == 2
        assert (split["split"] == "train").sum() == 2


def test_one_episode_is_all_train():
    frame = build_manifest(objects("f/g/ep1/frame_1.png", "f/g/ep1/frame_2.png"), "f")
    assert split_by_episode(frame, 0.5, seed=0)["split"].tolist() == ["train", "train"]


def test_zero_val_fraction_is_all_train():
    frame = build_manifest(objects(*[f"f/g/ep{e}/frame_1.png" for e in range(1, 6)]), "f")
    assert set(split_by_episode(frame, 0.0, seed=0)["split"]) == {"train"}


def test_val_never_takes_every_episode():
    frame = build_manifest(objects(*[f"f/g/ep{e}/frame_1.png" for e in range(1, 4)]), "f")
    split = split_by_episode(frame, 0.99, seed=0)
    assert (split["split"] == "train").sum() == 1


def test_frames_outside_episode_folders():
    frame = build_manifest(objects("f/top.png", "f/g1/direct_3.png", "f/g1/ep/frame_1.png"), "f/")
    rows = {k: (g, e, n) for k, g, e, n in zip(frame["key"], frame["game"], frame["episode"], frame["frame"])}
    assert rows["f/top.png"] == ("", "", -1)
    assert rows["f/g1/direct_3.png"] == ("g1", "", 3)
    assert rows["f/g1/ep/frame_1.png"] == ("g1", "ep", 1)
    assert len(episode_ids(frame)) == 3


# --- empty prefixes -------------------------------------------------------------------


def test_empty_prefix_raises_no_frames(bucket, moto_endpoint):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    with pytest.raises(NoFramesError) as info:
        index_frames(storage, "pokemon_frames")
    assert str(info.value).startswith(f"No frames found under s3://{bucket}/pokemon_frames/")


def test_prefix_with_only_junk_raises_no_frames(bucket, moto_endpoint):
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    for key in ("frames/.DS_Store", "frames/notes.txt", "frames/g/", "frames/g/e/._frame_1.png"):
        storage.put_bytes(key, b"x")
    with pytest.raises(NoFramesError, match=f"^No frames found under s3://{bucket}/frames/"):
        index_frames(storage, "frames/")


def test_local_storage_manifest(synth_frames):
    frame = index_frames(LocalStorage(synth_frames), "", val_fraction=0.25, seed=0)
    assert len(frame) == 24
    assert summarize(frame)["episodes"] == 4
    assert summarize(frame)["val_episodes"] == 1
    assert frame["key"].iloc[0] == "game1/episode1/frame_001.png"
