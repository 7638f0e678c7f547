"""The training log's upload when the disk under the output directory is full."""

from __future__ import annotations

import errno
import logging

import pytest

from pokevq.errors import OutputDirError
from pokevq.layout import Layout
from pokevq.storage import LocalStorage
from pokevq.train.publish import upload_log


class _FullDisk(logging.Handler):
    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_log_that_cannot_be_flushed_is_still_uploaded_and_the_run_gets_one_clear_error(tmp_path):
    log_path = tmp_path / "training.log"
    log_path.write_text("epoch 1 done\n")
    storage, layout = LocalStorage(tmp_path / "bucket"), Layout("exp")
    handler = _FullDisk()
    logging.getLogger("pokevq").addHandler(handler)
    try:
        with pytest.raises(OutputDirError, match=r"^Cannot write the training log .*: No space left on device\. "
                                                 r"Free disk space or pass another --output-dir\.$"):
            upload_log(storage, layout, log_path)
    finally:
        logging.getLogger("pokevq").removeHandler(handler)
    assert storage.get_bytes(layout.log_latest) == b"epoch 1 done\n"  # what was on disk is kept
