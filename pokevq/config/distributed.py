"""Where training runs: the device and torchrun's names for processes and machines (pokevq.dist)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pokevq.config.options import fail, option, section, settle, whole

DEVICES = ("auto", "cpu", "cuda", "mps")


@section
@dataclass(frozen=True)
class DistributedOptions:
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or mps.")
    nproc_per_node: int | str = option(
        1,
        "Training processes on this machine, one per GPU (auto: every visible GPU; with --device cpu, processes "
        "that share the CPU over gloo).",
        parse="nproc", metavar="N",
    )
    nnodes: int = option(1, "Machines that train together.")
    node_rank: int = option(0, "This machine's place among --nnodes (0 runs the flow; the others only train).")
    rdzv_endpoint: str | None = option(
        None,
        "host:port where the machines meet: machine 0's address and a free port (default on one machine: "
        "127.0.0.1 and a free port).",
        metavar="HOST:PORT",
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            fail("device", f"must be one of {', '.join(DEVICES)}; got {self.device!r}")
        nproc = self.nproc_per_node
        if isinstance(nproc, str) and nproc.strip().isdigit():
            nproc = int(nproc.strip())
        if nproc != "auto" and not whole(nproc, 1):
            fail("nproc_per_node", f"must be a positive integer or auto; got {self.nproc_per_node!r}")
        settle(self, "nproc_per_node", nproc)
        if not whole(self.nnodes, 1):
            fail("nnodes", f"must be an integer >= 1; got {self.nnodes!r}")
        if not whole(self.node_rank, 0):
            fail("node_rank", f"must be an integer >= 0; got {self.node_rank!r}")
        if self.node_rank >= self.nnodes:
            fail("node_rank", f"must be below --nnodes {self.nnodes}; got {self.node_rank}")
        self._check_rendezvous()

    def _check_rendezvous(self) -> None:
        endpoint = None if self.rdzv_endpoint is None else str(self.rdzv_endpoint).strip() or None
        settle(self, "rdzv_endpoint", endpoint)
        if endpoint is not None and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", endpoint):
            fail("rdzv_endpoint", f"must be host:port, e.g. 10.0.0.1:29500; got {endpoint!r}")
        if self.nnodes > 1 and endpoint is None:
            fail("rdzv_endpoint", "is needed with --nnodes above 1: machine 0's address and a free port, e.g. "
                                  "10.0.0.1:29500")
        if self.nnodes > 1 and self.nproc_per_node == "auto" and self.device == "cpu":
            fail("nproc_per_node", "auto counts GPUs; with --device cpu give a number")
