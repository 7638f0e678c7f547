"""The guide's Method 1: check the environment, show the S3 configuration, confirm, train.

    python examples/example_s3_training.py            # asks before starting
    python examples/example_s3_training.py --yes      # no question (for scripts)
    python examples/example_s3_training.py --epochs 5 --experiment-name my_experiment
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from pokevq import PokevqError, TrainConfig  # noqa: E402

REQUIRED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_BUCKET_NAME")
OPTIONAL = ("AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE")


def mask(value: str) -> str:
    """Show only the last four characters of a credential."""
    return "****" + value[-4:] if len(value) > 4 else "****"


def check_environment() -> list[str]:
    """Print what the environment provides; return the names that are missing."""
    print("Environment:")
    missing = []
    for name in REQUIRED + OPTIONAL:
        value = os.environ.get(name)
        if value is None:
            if name in REQUIRED:
                missing.append(name)
            print(f"  {name:<22} {'MISSING' if name in REQUIRED else '(not set)'}")
        else:
            shown = mask(value) if "KEY" in name else value
            print(f"  {name:<22} {shown}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train pokevq on your S3 bucket (the guide's example script).")
    parser.add_argument("--yes", action="store_true", help="Start without asking for confirmation.")
    parser.add_argument("--epochs", type=int, default=50, help="Number of epochs (default: 50).")
    parser.add_argument("--experiment-name", default=None, help="Experiment name (default: auto-generated).")
    parser.add_argument("--frames-dir", default="pokemon_frames", help="S3 prefix of the frames.")
    parser.add_argument("--cache-dir", default="/tmp/pokemon_cache", help="Local frame cache.")
    args = parser.parse_args(argv)

    missing = check_environment()
    uses_profile = bool(os.environ.get("AWS_PROFILE"))
    if "S3_BUCKET_NAME" in missing or (missing and not uses_profile):
        print(
            f"\nError: missing {', '.join(missing)}. Export them (see docs/train.md, 'Real AWS set-up'), "
            "or set AWS_PROFILE after `aws configure`.",
            file=sys.stderr,
        )
        return 1
    try:
        config = TrainConfig(
            use_s3=True,
            frames_dir=args.frames_dir,
            local_cache_dir=args.cache_dir,
            experiment_name=args.experiment_name,
            num_epochs=args.epochs,
            no_fallback=True,
        )
    except PokevqError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print("\nConfiguration:")
    for name, value in config.masked().items():
        print(f"  {name:<24} {value}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("\nNot starting: no terminal to confirm on. Pass --yes to start without asking.", file=sys.stderr)
            return 1
        if input("\nStart training with this configuration? [y/N] ").strip().lower() not in ("y", "yes"):
            print("Not started.")
            return 0

    from pokevq.cli import run_train

    try:
        run_train(config)
    except PokevqError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
