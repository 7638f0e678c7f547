"""`pokevq tokenize`'s options: the bucket's (the storage section, as `train` takes it) and its own."""

from __future__ import annotations

from dataclasses import dataclass

from pokevq.config import BUCKET_WRITE_OPTIONS, Sectioned, StorageOptions
from pokevq.config.options import fail, option, section, whole

TOKENIZE_DEVICES = ("auto", "cpu", "cuda")
# The storage options tokenize offers: the bucket, its security, the frames, the outputs and the cache.
TOKENIZE_STORAGE = ("use_s3", *BUCKET_WRITE_OPTIONS, "frames_dir", "output_dir", "local_cache_dir", "max_cache_bytes")


@section
@dataclass(frozen=True)
class TokenizeOptions:
    checkpoint: str = option("", "s3://bucket/checkpoints/<experiment>/checkpoint_best.pt or a local path.",
                             required=True)
    batch_size: int = option(64, "Frames encoded at once.")
    num_workers: int | None = option(
        None, "Frame-reading worker processes (default: 0 on the CPU, where the model needs the cores; up to 8 with "
              "a GPU).",
    )
    device: str = option("auto", "auto (CUDA when present), cpu or cuda.")
    bf16: bool = option(False, "Encode in bf16 autocast (CUDA only).")
    debug: bool = option(False, "Debug logging and tracebacks.")

    def __post_init__(self) -> None:
        if not str(self.checkpoint or "").strip():
            fail("checkpoint", "is needed: an s3:// URI or a local path of a checkpoint")
        if not whole(self.batch_size, 1):
            fail("batch_size", f"must be an integer >= 1; got {self.batch_size!r}")
        if self.num_workers is not None and not whole(self.num_workers, 0):
            fail("num_workers", f"must be an integer >= 0; got {self.num_workers!r}")
        if self.device not in TOKENIZE_DEVICES:
            fail("device", f"must be auto, cpu or cuda; got {self.device!r}")
        if self.bf16 and self.device == "cpu":
            fail("bf16", "is for CUDA: with --device cpu leave --bf16 off (it encodes in fp32)")


class TokenizeConfig(Sectioned):
    """Every option of `pokevq tokenize` and parameter of the `pokevq-tokenize` flow, by flat name."""

    SECTIONS = {"storage": (StorageOptions, TOKENIZE_STORAGE), "tokenize": (TokenizeOptions, None)}
    FIXED = {"no_fallback": True}  # tokens written to a worker's local disk would be lost
    storage: StorageOptions
    tokenize: TokenizeOptions
