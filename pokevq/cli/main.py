"""The `pokevq` command: train, synth, upload, pack, demo, stack.

This is the edge where user-facing errors are caught once and printed as one line
(a traceback only with --debug). With the rest of `pokevq.cli`, it is the only part of
`pokevq` that reaches up to the Prefect flow and the stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from pokevq.cli.console import prepare_prefect_logging
from pokevq.cli.demo import DEMO_EPOCHS
from pokevq.cli.flags import add_options
from pokevq.config import BucketConfig, BucketReadConfig, Sectioned, TrainConfig
from pokevq.data.sizes import parse_size
from pokevq.errors import PokevqError
from pokevq.tokenizer.options import TokenizeConfig

log = logging.getLogger("pokevq.cli")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one `Error:` line naming it (the usage is one `--help` away), exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"Error: {message} (see {self.prog} --help)\n")


def _whole_number(low: int, high: int | None = None) -> typing.Callable[[str], int]:
    """An int flag refused at the parser when out of [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number; got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {span}; got {value}")
        return value
    return parse


def _time_zone(text: str) -> str:
    """An IANA time zone (Europe/Paris, UTC), refused before `stack up` starts anything."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"must be an IANA time zone such as UTC or Europe/Paris; got {text!r}") \
            from None
    return text


def _cron(text: str) -> str:
    """A cron schedule as Prefect reads it, refused before `stack up` starts anything."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a cron expression such as '0 3 * * *'; got {text!r}") from None
    return text


def _pool_name(text: str) -> str:
    """A Prefect work pool name: not empty, none of the characters Prefect bans in names."""
    if not text.strip() or any(c in text for c in "/%&><"):
        raise argparse.ArgumentTypeError(f"must be a work pool name without / % & > <; got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pokevq", description="Train a VQ-VAE on Game Boy frames stored in S3, orchestrated by Prefect."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="Run the pokevq training flow.",
                                description="Run the pokevq training flow.")
    add_options(train, TrainConfig)

    synth = commands.add_parser("synth", help="Write synthetic Game Boy frames in the game/episode/frame layout.")
    synth.add_argument("--out", required=True, help="Folder to write game*/episode*/frame_*.png into.")
    synth.add_argument("--games", type=int, default=2, help="Number of games (default: 2).")
    synth.add_argument("--episodes", type=int, default=3, help="Episodes per game (default: 3).")
    synth.add_argument("--frames", type=int, default=100, help="Frames per episode (default: 100).")
    synth.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    synth.add_argument("--style", choices=("gameplay", "classic"), default="gameplay",
                       help="gameplay: frames drawn as the Game Boy draws real play (scrolling, sprites, fades, "
                            "battles, text screens); classic: pokevq's earlier tile-aligned frames; default: gameplay.")

    upload = commands.add_parser("upload", help="Upload a folder of frames to S3 (like aws s3 sync).")
    upload.add_argument("directory", help="Local folder of frames, e.g. the output of pokevq synth.")
    add_options(upload, BucketConfig)
    upload.add_argument("--threads", type=int, default=16, help="Concurrent uploads (default: 16).")

    pack = commands.add_parser(
        "pack", help="Pack the frames of a prefix into tar shards with a Parquet index (fast cold cache fills)."
    )
    add_options(pack, BucketConfig)
    pack.add_argument("--shard-size", default="128MB",
                      help="Target size of a shard, e.g. 128MB, 1GiB (default: 128MB).")
    pack.add_argument("--threads", type=int, default=32, help="Concurrent frame downloads (default: 32).")
    pack.add_argument("--keep-old", action="store_true", help="Keep shards that no frame is read from any more.")
    pack.add_argument("--full", action="store_true",
                      help="Repack every frame (e.g. for another --shard-size); by default only new or changed frames.")

    demo = commands.add_parser(
        "demo", help="Run the whole pipeline on a local S3 endpoint with synthetic frames (CPU, a few minutes)."
    )
    demo.add_argument("--epochs", type=_whole_number(1), default=DEMO_EPOCHS,
                      help=f"Epochs to train (default: {DEMO_EPOCHS}).")
    demo.add_argument("--out", default="./demo_outputs", help="Where to copy the results (default: ./demo_outputs).")

    tokenize = commands.add_parser(
        "tokenize", help="Encode every frame of a bucket to tokens with a trained checkpoint (pokevq-tokenize flow).")
    add_options(tokenize, TokenizeConfig)

    decode = commands.add_parser("decode", help="Render an episode's token file to PNG frames and a GIF.")
    decode.add_argument("tokens_file", metavar="TOKENS_FILE", help="A token file: s3://… or a local path.")
    decode.add_argument("--out", required=True, help="A new folder for frame_<n>.png and episode.gif.")
    decode.add_argument("--checkpoint", default=None,
                        help="The checkpoint that wrote it (default: the one its token set's lineage.json names).")
    add_options(decode, BucketReadConfig)

    export = commands.add_parser("export", help="Export a checkpoint as safetensors + config.json + a model card.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="s3://… or a local path of a checkpoint.")
    export.add_argument("--out", required=True, help="A new (or empty) folder to write into.")
    export.add_argument("--format", action="append", choices=("safetensors", "torchscript"), default=None,
                        help="Also write this format (safetensors always; torchscript: encode/decode without pokevq).")
    add_options(export, BucketReadConfig)

    stack = commands.add_parser(
        "stack", help="Bring a local Prefect server, work pool, deployment and worker up or down."
    )
    stack_commands = stack.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    up = stack_commands.add_parser("up", help="Start the server (UI), pool, blocks, deployment and a worker.")
    up.add_argument("--port", type=_whole_number(1, 65535), default=4200,
                    help="Port of the Prefect server and UI (default: 4200).")
    up.add_argument("--pool", type=_pool_name, default="pokevq", help="Work pool name (default: pokevq).")
    up.add_argument("--cron", type=_cron, default="0 3 * * *",
                    help="Nightly retraining schedule (default: '0 3 * * *').")
    up.add_argument("--timezone", type=_time_zone, default="UTC", help="Time zone of the schedule (default: UTC).")
    stack_commands.add_parser("down", help="Stop exactly the processes `stack up` started.")

    for sub in (synth, upload, pack, demo, decode, export, stack):  # train and tokenize have theirs
        sub.add_argument("--debug", action="store_true", help="Show tracebacks and debug logs.")
    return parser


# ----------------------------------------------------------------- commands


def config_from_args(args: argparse.Namespace, config: type[Sectioned] = TrainConfig) -> Any:
    """A command's configuration from its parsed flags (the ones `config` offers), checked once."""
    names = config.owners()
    return config(**{k: v for k, v in vars(args).items() if k in names})


def run_train(config: TrainConfig) -> dict[str, Any]:
    """Run the flow in this process (ephemeral Prefect unless PREFECT_API_URL points at a server).

    On a machine other than 0 (`--node-rank N`), no flow runs: its training processes join
    machine 0's and train what it says.
    """
    if config.distributed.node_rank > 0:
        from pokevq.dist.launch import run_node

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        run_node(config)
        print(f"Machine {config.distributed.node_rank}: training finished.")
        return {}
    prepare_prefect_logging(config.run.debug)
    from flows.pokevq_flow import train

    summary = train(config)
    _print_summary(summary)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    final = summary.get("final") or {}
    val = final.get("val") or final.get("train") or {}
    lines = [f"Trained {summary.get('epochs_trained', 0)} epoch(s)."]
    if val:
        lines.append(
            f"Last epoch: loss {val.get('loss', 0):.5f}, PSNR {val.get('psnr', 0):.2f} dB, "
            f"codebook usage {100 * val.get('codebook_usage', 0):.0f}%."
        )
    if summary.get("skipped_frames"):
        lines.append(f"Skipped {summary['skipped_frames']} unreadable frame(s): see the report.")
    if summary.get("fallback"):
        lines.append("WARNING: S3 set-up failed and this run used LOCAL storage (see the report).")
    for name, uri in (summary.get("artifacts") or {}).items():
        lines.append(f"  {name:<18} {uri}")
    print("\n".join(lines))


def _at_least_one(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise PokevqError(f"--{name} must be at least 1; got {getattr(args, name)}")


def run_synth(args: argparse.Namespace) -> None:
    from pokevq.synth.generate import generate_dataset

    _at_least_one(args, "games", "episodes", "frames")
    if args.seed < 0:
        raise PokevqError(f"--seed must be an integer >= 0; got {args.seed}")
    try:
        frames = generate_dataset(args.out, games=args.games, episodes=args.episodes, frames=args.frames,
                                  seed=args.seed, style=args.style)
    except OSError as exc:
        raise PokevqError(f"--out {args.out} is not a folder pokevq can write frames into ({exc.strerror or exc}): "
                          "pick a new folder") from exc
    print(f"Wrote {len(frames)} frames to {os.path.abspath(args.out)}")


def run_upload(args: argparse.Namespace) -> None:
    from pokevq.data.upload_frames import upload_directory

    _at_least_one(args, "threads")
    config = config_from_args(args, BucketConfig)
    count = upload_directory(args.directory, config.storage, threads=args.threads)
    print(f"Uploaded {count} frames to s3://{config.storage.s3_bucket}/{config.storage.frames_dir.strip('/')}/")


def run_pack(args: argparse.Namespace) -> None:
    from pokevq.data.pack import pack
    from pokevq.run.validate import bucket_storage

    _at_least_one(args, "threads")
    shard_bytes = parse_size(args.shard_size, "--shard-size")
    config = config_from_args(args, BucketConfig)
    storage = bucket_storage(config.storage)
    result = pack(storage, config.storage.frames_dir, shard_bytes=shard_bytes, threads=args.threads,
                  keep_old=args.keep_old, progress=True, full=args.full)
    if not result.frames:
        print(f"Nothing new to pack: all {result.indexed} frames are in shards; "
              f"index at {storage.uri(result.index_key)}")
        return
    print(f"Packed {result.frames} frames ({result.bytes / 1e6:.1f} MB) into {result.shards} shard(s); "
          f"index at {storage.uri(result.index_key)} lists {result.indexed} frames")


def run_tokenize(args: argparse.Namespace) -> None:
    config = config_from_args(args, TokenizeConfig)
    prepare_prefect_logging(config.tokenize.debug)
    from flows.tokenize_flow import tokenize

    summary = tokenize(config)
    psnr = summary.get("sample_psnr")
    print(f"Tokenized {summary['frames']} frames into {summary['episodes_written']} new episode file(s) "
          f"({summary['episodes_skipped']} already there) at {summary['frames_per_second']:.1f} frames/s"
          + (f"; sample PSNR {psnr:.2f} dB" if psnr is not None else "") + ".")
    print(f"  tokens   {summary['token_set']}\n  index    {summary['index']}\n  lineage  {summary['lineage']}")


def _region_and_endpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Where `decode` and `export` read: the flags, else the environment; the bucket owner checked when given."""
    storage = config_from_args(args, BucketReadConfig).storage
    return {"region": storage.s3_region, "endpoint_url": storage.s3_endpoint_url,
            "expected_bucket_owner": storage.expected_bucket_owner}


def run_decode(args: argparse.Namespace) -> None:
    from pokevq.tokenizer.render import decode_token_file

    done = decode_token_file(args.tokens_file, args.out, checkpoint=args.checkpoint, **_region_and_endpoint(args))
    print(f"Decoded {done['frames']} frames of {done['game']}/{done['episode']} into {done['out']} "
          f"(episode.gif included).")
    if done["psnr"] is not None:
        print(f"PSNR against the original frames: {done['psnr']:.2f} dB over {done['compared']} frames.")
    else:
        print(f"No PSNR: {done['psnr_unavailable']}.")


def run_export(args: argparse.Namespace) -> None:
    from pathlib import Path

    from pokevq.tokenizer.export import export_tokenizer
    from pokevq.tokenizer.model import Tokenizer

    tokenizer = Tokenizer.from_checkpoint(args.checkpoint, device="cpu", **_region_and_endpoint(args))
    written = export_tokenizer(tokenizer, Path(args.out), tuple(args.format or ("safetensors",)))
    print(f"Exported {args.checkpoint} (SHA-256 {tokenizer.lineage.checkpoint_sha256[:12]}) to {args.out}:")
    for path in written:
        print(f"  {path.name}")
    print("Load it with: from pokevq import Tokenizer; Tokenizer.from_pretrained(" + repr(args.out) + ")")


def run_demo(args: argparse.Namespace) -> None:
    prepare_prefect_logging(args.debug)
    from pokevq.cli.demo import run_demo as demo

    demo(epochs=args.epochs, out=args.out, debug=args.debug)


def run_stack(args: argparse.Namespace) -> None:
    from deployments.stack import stack_down, stack_up

    if args.stack_command == "down":
        stack_down()
        return
    state = stack_up(port=args.port, pool=args.pool, cron=args.cron, timezone=args.timezone)
    print(
        f"\npokevq stack is up.\n"
        f"  Prefect UI:   {state.ui_url}\n"
        f"  Work pool:    {state.pool} (process worker running)\n"
        f"  Deployment:   pokevq/train (nightly schedule: {args.cron} {args.timezone})\n"
        f"  S3 bucket:    s3://{state.bucket}" + (f" at {state.endpoint_url}" if state.endpoint_url else "") + "\n"
        f"\nIn your shell:\n"
        f"  export PREFECT_API_URL={state.api_url}\n"
        f"  prefect deployment run pokevq/train -p num_epochs=2 -p hidden_channels=32\n"
        f"\nStop everything with: pokevq stack down"
    )


# ------------------------------------------------------------- error edge


COMMANDS = {"synth": run_synth, "upload": run_upload, "pack": run_pack, "demo": run_demo, "tokenize": run_tokenize,
            "decode": run_decode, "export": run_export, "stack": run_stack}  # `train` builds its TrainConfig first


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        if args.command == "train":
            run_train(config_from_args(args))
        else:
            COMMANDS[args.command](args)
    except PokevqError as exc:
        if debug:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted: checkpoints already uploaded are kept.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
