"""Training in several processes (torch.distributed, gloo on CPU) as users run it: real processes, real S3 API.

- 2 processes on one machine, and 2 "machines" on localhost, train like 1 process: same frames
  per epoch, the same validation PSNR;
- every rank holds the same weights and codebook;
- a killed rank fails the run with one line that names it, leaves no process behind, and a
  retry resumes from the last checkpoint in another number of processes;
- a mid-epoch checkpoint written by 2 processes finishes its epoch in 1, every frame once.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from pokevq.storage.local_server import free_port as _free_port
from tests.helpers.runs import TINY_FLAGS

RUN = [*TINY_FLAGS, "--num-workers", "0", "--batch-size", "8", "--learning-rate", "1e-3", "--device", "cpu"]


def _env(prefect_env: dict[str, str], frame_log: Path | None = None) -> dict[str, str]:
    env = {**os.environ, **prefect_env, "OMP_NUM_THREADS": "1"}
    if frame_log is not None:
        env["POKEVQ_FRAME_LOG"] = str(frame_log)
    return env


def _pokevq(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pokevq", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the run was still going after {timeout} s: {err[-3000:]}")
    return process.returncode, out, err


def _s3_args(bucket: str, endpoint: str, root: Path, name: str) -> list[str]:
    return ["--use-s3", "--s3-bucket", bucket, "--s3-endpoint-url", endpoint, "--no-fallback",
            "--cache-dir", str(root / "cache"), "--output-dir", str(root / "outputs"), "--experiment-name", name]


def _checkpoint(s3_client, bucket: str, name: str, file: str = "checkpoint_latest.pt") -> dict:
    body = s3_client.get_object(Bucket=bucket, Key=f"checkpoints/{name}/{file}")["Body"].read()
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)


def _frame_lines(frame_log: Path) -> list[tuple[int, int, str]]:
    """(epoch, step, key) of every whole line of a frame log (a process killed mid-write leaves half a line)."""
    lines = [line.split(" ", 2) for line in frame_log.read_text().splitlines()]
    return [(int(e), int(s), key) for e, s, key in (parts for parts in lines if len(parts) == 3)]


def _frames_per_epoch(frame_log: Path) -> dict[int, Counter]:
    epochs: dict[int, Counter] = {}
    for line in frame_log.read_text().splitlines():
        epoch, _, key = line.split(" ", 2)
        epochs.setdefault(int(epoch), Counter())[key] += 1
    return epochs


@pytest.fixture(scope="module")
def prefect_env(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return {"PREFECT_API_URL": PREFECT_API_URL.value()}


@pytest.fixture(scope="module")
def frames_bucket(moto_endpoint, episode_frames):
    """96 frames (6 episodes of 16) in a bucket of their own, for every run of this module."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = "pokevq-dist"
    client.create_bucket(Bucket=name)
    for path in sorted(episode_frames.rglob("*.png")):
        client.upload_file(str(path), name, f"pokemon_frames/{path.relative_to(episode_frames).as_posix()}")
    return name


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, frames_bucket, moto_endpoint, prefect_env):
    """The yardstick: 3 epochs in one process."""
    root = tmp_path_factory.mktemp("one")
    log = root / "frames.log"
    code, out, err = _finish(_pokevq(["train", *RUN, "--epochs", "3",
                                      *_s3_args(frames_bucket, moto_endpoint, root, "dist-one")],
                                     root, _env(prefect_env, log)))
    assert code == 0, err[-3000:]
    return _frames_per_epoch(log)


def _assert_like_one_process(s3_client, bucket, name, frames, one_process):
    import boto3  # noqa: F401 - s3_client is boto3's

    assert frames == one_process  # each epoch: the same frames, each once, across the ranks
    alone = _checkpoint(s3_client, bucket, "dist-one")["history"]
    together = _checkpoint(s3_client, bucket, name)["history"]
    assert [r["epoch"] for r in together] == [1, 2, 3]
    # The same optimisation, step by step: every epoch's losses agree to 4 significant digits (what the
    # log prints) and its PSNRs to 0.01 dB, in training and in validation.
    for one, two in zip(alone, together):
        for split in ("train", "val"):
            assert math.isclose(two[split]["loss"], one[split]["loss"], rel_tol=1e-4), (one["epoch"], split)
            assert abs(two[split]["psnr"] - one[split]["psnr"]) <= 0.01, (one["epoch"], split)
    # The metrics are the epoch's over every rank: all validation frames, all training frames.
    assert together[-1]["val"]["frames"] == alone[-1]["val"]["frames"]
    assert together[-1]["train"]["frames"] == alone[-1]["train"]["frames"]
    # The tile dictionaries (fitted on rank 0) are scored on every rank's validation frames, as the model is:
    # the report's rows describe the same frames, and the figures are one process's.
    floors = [next(r["baselines"] for r in history if r.get("baselines")) for history in (alone, together)]
    assert list(floors[1]) == list(floors[0]) and "exact dictionary" in floors[1]
    for name, figures in floors[1].items():
        assert figures["frames"] == together[-1]["val"]["frames"], name
        assert abs(figures["psnr"] - floors[0][name]["psnr"]) <= 0.01, name
    assert together[-1]["val_on_baseline_frames"]["frames"] == together[-1]["val"]["frames"]
    assert abs(together[-1]["val_on_baseline_frames"]["psnr"] - together[-1]["val"]["psnr"]) <= 1e-6


def test_two_processes_train_like_one(tmp_path, frames_bucket, moto_endpoint, prefect_env, s3_client, one_process):
    log = tmp_path / "frames.log"
    code, out, err = _finish(_pokevq(["train", *RUN, "--epochs", "3", "--nproc-per-node", "2",
                                      *_s3_args(frames_bucket, moto_endpoint, tmp_path, "dist-two")],
                                     tmp_path, _env(prefect_env, log)))
    assert code == 0, err[-3000:]
    assert "Trained 3 epoch(s)." in out
    _assert_like_one_process(s3_client, frames_bucket, "dist-two", _frames_per_epoch(log), one_process)


def test_two_machines_on_localhost_train_like_one(tmp_path, frames_bucket, moto_endpoint, prefect_env, s3_client,
                                                  one_process):
    log = tmp_path / "frames.log"
    meet = ["--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--nproc-per-node", "1"]
    second = _pokevq(["train", *meet, "--node-rank", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "node1")],
                     tmp_path, _env(prefect_env, log))
    first = _pokevq(["train", *RUN, "--epochs", "3", *meet, "--node-rank", "0",
                     *_s3_args(frames_bucket, moto_endpoint, tmp_path, "dist-nodes")], tmp_path, _env(prefect_env, log))
    code, out, err = _finish(first)
    second_code, second_out, second_err = _finish(second, timeout=60)
    assert code == 0, err[-3000:]
    assert second_code == 0, second_err[-3000:]
    assert "Machine 1: training finished." in second_out
    assert any((tmp_path / "node1").iterdir())  # machine 1 read its frames through its own cache
    _assert_like_one_process(s3_client, frames_bucket, "dist-nodes", _frames_per_epoch(log), one_process)


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, parent, ...), None once it is gone."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_tree(root: int) -> dict[int, str]:
    """Every living process under `root` (children, theirs, ...), each with its start time (pids get reused)."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
            started[int(entry.name)] = fields[19]
    tree, todo = {}, [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            tree[child] = started[child]
            todo.append(child)
    return tree


def _still_running(processes: dict[int, str], seconds: float = 0.0) -> list[str]:
    """Those of `processes` still running (a zombie has ended) after waiting up to `seconds`, with their command."""
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for pid, start in processes.items():
            fields = _stat(pid)
            if fields is not None and fields[19] == start and fields[0] != "Z":
                left.append(f"{pid} {_cmdline(pid)}")
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _start_and_wait_for_a_checkpoint(args: list[str], cwd: Path, env: dict[str, str],
                                     latest: Path) -> tuple[subprocess.Popen, dict[int, str]]:
    """A run of many epochs, once its first checkpoint is written; with every process it has started."""
    run = _pokevq(args, cwd, env)
    deadline = time.monotonic() + 120
    while not latest.is_file() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.2)
    if not latest.is_file():
        run.kill()
        pytest.fail(f"the first epoch never finished: {_finish(run, timeout=30)[2][-3000:]}")
    return run, _process_tree(run.pid)


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return errors[0]


def test_a_killed_rank_fails_the_run_in_one_line_and_a_retry_resumes(tmp_path, synth_frames, prefect_env):
    log = tmp_path / "frames.log"
    outputs = tmp_path / "outputs"
    args = ["train", *RUN, "--frames-dir", str(synth_frames), "--output-dir", str(outputs),
            "--experiment-name", "killed", "--batch-size", "6"]
    latest = outputs / "checkpoints" / "killed" / "checkpoint_latest.pt"
    # 3 processes: when one dies, rank 0 must stop the one still training, not only notice the dead one.
    run, processes = _start_and_wait_for_a_checkpoint([*args, "--epochs", "200", "--nproc-per-node", "3"],
                                                      tmp_path, _env(prefect_env, log), latest)
    followers = sorted(pid for pid in processes if "pokevq.dist.follower" in _cmdline(pid))
    assert len(followers) == 2, processes
    os.kill(followers[0], signal.SIGKILL)
    code, out, err = _finish(run, timeout=120)

    assert not _still_running(processes), "processes of the run left behind"
    assert code == 1
    error = _one_error_line(err)
    assert "training rank " in error and "SIGKILL" in error and f"pid {followers[0]}" in error

    # A retry resumes from the last checkpoint, here in one process.
    from pokevq.train.checkpoint import load_checkpoint

    saved = load_checkpoint(latest)["epoch"]
    code, out, err = _finish(_pokevq([*args, "--epochs", str(saved + 1), "--resume", str(latest)], tmp_path,
                                     _env(prefect_env)))
    assert code == 0, err[-3000:]
    assert load_checkpoint(latest)["epoch"] == saved + 1


def test_the_other_ranks_exit_on_their_own_when_rank_0_dies(tmp_path, synth_frames, prefect_env):
    outputs = tmp_path / "outputs"
    latest = outputs / "checkpoints" / "orphans" / "checkpoint_latest.pt"
    run, processes = _start_and_wait_for_a_checkpoint(
        ["train", *RUN, "--frames-dir", str(synth_frames), "--output-dir", str(outputs), "--experiment-name",
         "orphans", "--batch-size", "4", "--epochs", "200", "--nproc-per-node", "2"], tmp_path, _env(prefect_env),
        latest)
    assert any("pokevq.dist.follower" in _cmdline(pid) for pid in processes), processes
    run.kill()  # rank 0, the flow's process: nobody is left to stop the others
    _finish(run, timeout=30)
    assert not _still_running(processes, seconds=60), "training processes outlived rank 0"


def test_a_rank_that_raises_fails_the_run_in_one_line_naming_it(tmp_path, synth_frames, prefect_env):
    """Rank 1 raises (as a device error or a bug would) when it starts its first epoch."""
    env = {**_env(prefect_env), "POKEVQ_TEST_RAISE_IN_RANK": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "helpers" / "rank_fault"),
                                          os.environ.get("PYTHONPATH", "")])}
    run = _pokevq(["train", *RUN, "--frames-dir", str(synth_frames), "--output-dir", str(tmp_path / "outputs"),
                   "--experiment-name", "raises", "--batch-size", "4", "--epochs", "2", "--nproc-per-node", "2"],
                  tmp_path, env)
    processes: dict[int, str] = {}
    while run.poll() is None and not any("pokevq.dist.follower" in _cmdline(pid) for pid in processes):
        processes = _process_tree(run.pid)
        time.sleep(0.1)
    code, out, err = _finish(run, timeout=120)

    assert code == 1, err[-3000:]
    error = _one_error_line(err)
    assert "training rank 1" in error and "CUDA error: an illegal memory access" in error, error
    assert processes and not _still_running(processes), "processes of the run left behind"


def test_ranks_that_never_meet_fail_after_pokevq_dist_timeout(tmp_path, frames_bucket, moto_endpoint, prefect_env):
    """Machine 1 of 2 never starts: machine 0 gives up after POKEVQ_DIST_TIMEOUT, not after the default 30 min."""
    meet = ["--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--nproc-per-node", "1",
            "--node-rank", "0"]
    started = time.monotonic()
    code, out, err = _finish(_pokevq(["train", *RUN, "--epochs", "1", *meet,
                                      *_s3_args(frames_bucket, moto_endpoint, tmp_path, "dist-alone")],
                                     tmp_path, {**_env(prefect_env), "POKEVQ_DIST_TIMEOUT": "3"}), timeout=90)
    assert code == 1, err[-3000:]
    error = _one_error_line(err)
    assert "within 3 s" in error and "POKEVQ_DIST_TIMEOUT" in error and "--node-rank" in error, error
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)], ids=["two-then-one", "one-then-two"])
def test_a_run_killed_mid_epoch_finishes_its_epoch_at_another_world_size(tmp_path, episode_frames, prefect_env,
                                                                         first, then):
    """kill -9 inside an epoch in `first` processes, resume in `then`: each frame of that epoch trained once."""
    from pokevq.data.manifest import index_frames
    from pokevq.layout import STEP_GLOB
    from pokevq.storage import LocalStorage
    from pokevq.train.checkpoint import load_checkpoint

    killed, resumed = tmp_path / "frames-killed.log", tmp_path / "frames-resumed.log"
    outputs = tmp_path / "outputs"
    args = ["train", *RUN, "--frames-dir", str(episode_frames), "--output-dir", str(outputs),
            "--experiment-name", "reshaped"]
    latest = outputs / "checkpoints" / "reshaped" / "checkpoint_latest.pt"
    run, processes = _start_and_wait_for_a_checkpoint(
        [*args, "--epochs", "200", "--checkpoint-every-steps", "1", "--nproc-per-node", str(first)], tmp_path,
        _env(prefect_env, killed), latest)
    os.kill(run.pid, signal.SIGKILL)  # rank 0, the flow's process; the other ranks follow it out
    _finish(run, timeout=30)
    assert not _still_running(processes, seconds=60), "training processes outlived rank 0"

    # The newest checkpoint written inside an epoch (every step writes one; the kill may follow an epoch's end).
    steps = sorted((outputs / "runs" / "reshaped" / "checkpoints").glob(STEP_GLOB),
                   key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    for path in reversed(steps):
        state = load_checkpoint(path)
        if state["position"]:
            break
    else:
        pytest.fail(f"no checkpoint inside an epoch among {[p.name for p in steps]}")
    epoch, step = state["epoch"] + 1, state["global_step"]
    assert state["position"]["world_size"] == first
    code, out, err = _finish(_pokevq([*args, "--epochs", str(epoch), "--nproc-per-node", str(then),
                                      "--resume", str(path)], tmp_path, _env(prefect_env, resumed)))
    assert code == 0, err[-3000:]
    manifest = index_frames(LocalStorage(str(episode_frames)), "", val_fraction=0.1, seed=0)
    train = Counter(manifest.loc[manifest["split"] == "train", "key"])
    before = Counter(key for e, s, key in _frame_lines(killed) if e == epoch and s <= step)  # in the checkpoint
    after = Counter(key for e, _, key in _frame_lines(resumed) if e == epoch)
    assert 0 < sum(before.values()) < sum(train.values())  # killed inside the epoch
    assert before + after == train  # every training frame of the epoch once, across both runs


def _rank(rank: int, world: int, frames: str, port: int, out: str) -> None:
    """One rank of `test_every_rank_holds_the_same_codebook_and_weights` (spawned)."""
    import torch.distributed as dist

    from pokevq.config import TrainConfig
    from pokevq.data import FrameSource
    from pokevq.data.cache import FrameCache
    from pokevq.data.manifest import index_frames
    from pokevq.storage import LocalStorage
    from pokevq.train.trainer import Trainer
    from tests.helpers.runs import TINY

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    storage = LocalStorage(frames)
    manifest = index_frames(storage, "", val_fraction=0.2, seed=0)
    # bf16 autocast on the CPU: the mixed-precision step GPUs take, in DDP.
    config = TrainConfig(experiment_name="ranks", batch_size=8, learning_rate=3e-3, num_workers=0, device="cpu",
                         precision="bf16", dead_code_restart="random", **{**TINY, "architecture": "tile"})
    source = FrameSource(storage, FrameCache(Path(out) / f"cache{rank}", max_items=len(manifest) + 1))
    trainer = Trainer(config, manifest, source, Path(out) / f"work{rank}")
    differences = []

    def same_codebook(module, inputs, output):  # after every training step's quantizer update
        if module.training:
            mine = torch.cat([module.embedding.flatten(), module.cluster_size])
            everyone = [torch.zeros_like(mine) for _ in range(world)]
            dist.all_gather(everyone, mine)
            differences.append(max(float((other - everyone[0]).abs().max()) for other in everyone))

    trainer.model.quantizer.register_forward_hook(same_codebook)
    weights, losses = [], []
    for epoch in (1, 2):
        losses.append(trainer.train_epoch(epoch).train["loss"])
        mine = torch.cat([p.detach().flatten() for p in trainer.model.state_dict().values() if p.is_floating_point()])
        everyone = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(everyone, mine)
        weights.append(max(float((other - everyone[0]).abs().max()) for other in everyone))
    trainer.close()
    if rank == 0:
        torch.save({"codebook": differences, "weights": weights, "losses": losses, "amp": trainer.use_amp},
                   Path(out) / "result.pt")
    dist.destroy_process_group()


def test_every_rank_holds_the_same_codebook_and_weights(tmp_path, episode_frames):
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(2, str(episode_frames), _free_port(), str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt")
    assert len(result["codebook"]) >= 18  # every step of both epochs was checked
    assert max(result["codebook"]) == 0.0
    assert result["weights"] == [0.0, 0.0]
    assert result["amp"] and result["losses"][1] < result["losses"][0]  # bf16 autocast trains


def test_two_processes_stream_a_packed_bucket_each_frame_once(tmp_path, moto_endpoint, episode_frames, prefect_env,
                                                              s3_client):
    """The path of buckets larger than the cache: each rank streams its own shards, no frame twice in an epoch."""
    from pokevq.data.manifest import index_frames
    from pokevq.data.pack import pack
    from pokevq.storage import S3Storage
    from tests.helpers.frames import upload_tree

    bucket = "pokevq-dist-stream"
    s3_client.create_bucket(Bucket=bucket)
    upload_tree(s3_client, bucket, episode_frames, "pokemon_frames/")
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    pack(storage, "pokemon_frames", shard_bytes=16 * 1024, threads=4)
    log = tmp_path / "frames.log"
    code, out, err = _finish(_pokevq(["train", *RUN, "--epochs", "2", "--nproc-per-node", "2",
                                      *_s3_args(bucket, moto_endpoint, tmp_path, "dist-stream")],
                                     tmp_path, _env(prefect_env, log)))
    assert code == 0, err[-3000:]
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.1, seed=0)
    train = set(manifest.loc[manifest["split"] == "train", "key"])
    for epoch, trained in _frames_per_epoch(log).items():
        assert set(trained) <= train and max(trained.values()) == 1, epoch
        assert len(trained) >= len(train) - 1, epoch  # an even split over 2 ranks drops at most one frame
    history = _checkpoint(s3_client, bucket, "dist-stream")["history"]
    assert all(r["data_path"].startswith(f"{len(manifest)} frames: {len(manifest)} packed in shards")
               for r in history), history
    assert history[-1]["val"]["frames"] == int((manifest["split"] == "val").sum())


def test_two_machines_never_download_the_same_shard(tmp_path, moto_endpoint, episode_frames, prefect_env, s3_client,
                                                    fault_proxy):
    """Each machine has its own cache: each shard of a packed bucket is fetched by one rank only in an epoch, the
    training frames and the validation frames it holds alike, and every training frame is still trained once."""
    from pokevq.data.manifest import index_frames
    from pokevq.data.pack import pack
    from pokevq.storage import S3Storage
    from tests.helpers.frames import upload_tree
    from tests.helpers.runs import list_keys

    bucket = "pokevq-dist-shards"
    s3_client.create_bucket(Bucket=bucket)
    upload_tree(s3_client, bucket, episode_frames, "pokemon_frames/")
    storage = S3Storage(bucket, "us-east-1", endpoint_url=moto_endpoint)
    pack(storage, "pokemon_frames", shard_bytes=16 * 1024, threads=4)  # 13 shards of about 7 frames
    shards = [key for key in list_keys(s3_client, bucket, "pokemon_frames/_shards/") if key.endswith(".tar")]
    log = tmp_path / "frames.log"
    meet = ["--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--nproc-per-node", "1"]
    second = _pokevq(["train", *meet, "--node-rank", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "node1")],
                     tmp_path, _env(prefect_env, log))
    first = _pokevq(["train", *RUN, "--epochs", "1", *meet, "--node-rank", "0",
                     *_s3_args(bucket, fault_proxy.url, tmp_path, "dist-shards")], tmp_path, _env(prefect_env, log))
    code, out, err = _finish(first)
    second_code, _, second_err = _finish(second, timeout=60)
    assert code == 0, err[-3000:]
    assert second_code == 0, second_err[-3000:]

    gets = Counter(path.split("?")[0] for method, path, _ in fault_proxy.seen if method == "GET" and ".tar" in path)
    assert sorted(gets) == [f"/{bucket}/{key}" for key in shards]  # the epoch read every shard ...
    assert {path: count for path, count in gets.items() if count > 1} == {}  # ... each once, by one rank
    for machine in (tmp_path / "cache", tmp_path / "node1"):  # both machines read shards, each into its own cache
        assert any(machine.rglob("shards/*.shard")), machine
    manifest = index_frames(storage, "pokemon_frames", val_fraction=0.1, seed=0)
    train = set(manifest.loc[manifest["split"] == "train", "key"])
    trained = _frames_per_epoch(log)[1]
    assert set(trained) <= train and max(trained.values()) == 1
    assert len(trained) >= len(train) - 1  # an even split over 2 ranks drops at most one frame
