"""One training run per experiment at a time: a lease object next to the experiment's checkpoints.

Before training, a run writes `checkpoints/<experiment>/.lease.json` naming its owner (the
orchestrator's flow run id, else host:pid) and an expiry (now + ttl). It renews the expiry while
it trains (every epoch, and from a heartbeat thread) and deletes the lease on any exit, failed or
not, so a retry can take it again. A second run of the same experiment refuses to start while the
lease is held and unexpired (or unreadable and written less than a ttl ago). A lease is taken over when:

- it has expired (its owner stopped renewing it: killed, or lost its connection for a whole ttl);
- its owner is this same owner (a retry of the same flow run may always take its own lease);
- it was written by a process on this host that no longer runs (killed with SIGKILL, say);
- it is unreadable and was last written over a ttl ago.

Every write goes through the storage interface's conditional operations, on the token that
`get_with_token` read with the lease: acquiring is `put_if_absent`, or `put_if_match` to take over;
renewing is `put_if_match`; releasing is `delete_if_match`. So two runs racing for one lease cannot
both win, a run whose lease was taken over learns it at its next renewal, and it never deletes the
newcomer's lease. On S3 they are `If-None-Match: *` and `If-Match: <etag>`, on local storage a lock
on the directory. Where a backend's conditions are not atomic (`atomic_conditions` False: S3-compatible
stores that ignore them, and moto, whose check races) a short re-read after acquiring settles the
race: whoever's record is there after `race_delay` holds the lease.

This module works on any `Storage` and never imports the orchestrator.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pokevq import settings
from pokevq.errors import ObjectNotFoundError, PokevqError, PreconditionFailedError, StorageError
from pokevq.layout import LEASE_FILE
from pokevq.storage import Storage

log = logging.getLogger(__name__)


class LeaseHeldError(PokevqError):
    """Another run holds the experiment's lease."""


class LeaseLostError(PokevqError):
    """This run's lease was taken over by another run (it had expired): stop writing."""


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


@dataclass(frozen=True)
class LeaseOwner:
    """Who holds a lease: `id` decides ownership; host and pid tell whether it still runs."""

    id: str
    hostname: str
    pid: int
    flow_run_id: str | None = None

    @classmethod
    def current(cls, flow_run_id: str | None = None) -> LeaseOwner:
        hostname, pid = socket.gethostname(), os.getpid()
        return cls(id=str(flow_run_id) if flow_run_id else f"{hostname}:{pid}", hostname=hostname, pid=pid,
                   flow_run_id=str(flow_run_id) if flow_run_id else None)

    def describe(self) -> str:
        where = f"{self.hostname}, pid {self.pid}"
        return f"flow run {self.flow_run_id} ({where})" if self.flow_run_id else f"a run on {where}"


@dataclass(frozen=True)
class LeaseRecord:
    """The lease object's content."""

    experiment: str
    owner: LeaseOwner
    acquired_at: float
    expires_at: float

    def to_bytes(self) -> bytes:
        values = asdict(self)
        values.update(acquired=_iso(self.acquired_at), expires=_iso(self.expires_at), format=1)
        return json.dumps(values, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        values = json.loads(data.decode("utf-8"))
        owner = values["owner"]
        return cls(
            experiment=str(values["experiment"]),
            owner=LeaseOwner(id=str(owner["id"]), hostname=str(owner["hostname"]), pid=int(owner["pid"]),
                             flow_run_id=owner.get("flow_run_id")),
            acquired_at=float(values["acquired_at"]),
            expires_at=float(values["expires_at"]),
        )


class Lease:
    """The lease of one experiment, held by one owner."""

    def __init__(
        self,
        storage: Storage,
        key: str,
        experiment: str,
        owner: LeaseOwner,
        ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        race_delay: float = 0.2,
    ) -> None:
        self.storage = storage
        self.key = key
        self.experiment = experiment
        self.owner = owner
        self.ttl = float(ttl) if ttl is not None else settings.lease_ttl()  # renewed every ttl/3 and at each epoch
        self.clock = clock
        self.race_delay = race_delay
        self.held = False
        self.expires_at = 0.0
        self.lost: LeaseLostError | None = None
        self.taken_over: str | None = None  # why an existing lease was taken over by acquire(), if it was
        self._unreadable = ""  # why the lease last read could not be parsed
        self._acquired_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io_lock = threading.Lock()

    @classmethod
    def for_experiment(cls, storage: Storage, checkpoints_prefix: str, experiment: str, owner: LeaseOwner,
                       **options: Any) -> Lease:
        """The lease at `<checkpoints_prefix>.lease.json` (the layout's `checkpoints/<experiment>/`)."""
        return cls(storage, f"{checkpoints_prefix}{LEASE_FILE}", experiment, owner, **options)

    @property
    def uri(self) -> str:
        return self.storage.uri(self.key)

    def describe(self) -> str:
        return f"{self.owner.describe()} until {_iso(self.expires_at)}"

    # ------------------------------------------------------------------ public
    def acquire(self) -> str | None:
        """Take the lease or raise `LeaseHeldError`; returns why an existing lease was taken over, if it was."""
        with self._io_lock:
            for _ in range(5):
                current, token = self._read()
                now = self.clock()
                if token is None:
                    record = self._record(now, now)
                    if self._create(record) and self._confirm(record):
                        self._held(record)
                        log.info("Lease on experiment %s taken: %s", self.experiment, self.uri)
                        return None
                    continue  # someone else created it first: look again
                reason = self._takeover_reason(current, now)
                if reason is None:
                    assert current is not None
                    raise LeaseHeldError(
                        f"Experiment {self.experiment} is already being trained by {current.owner.describe()} "
                        f"(lease until {_iso(current.expires_at)}): pick another --experiment-name or wait "
                        f"(the lease is {self.uri})"
                    )
                record = self._record(now, now if current is None or current.owner.id != self.owner.id
                                      else current.acquired_at)
                if self._replace(record, token) and self._confirm(record):
                    self._held(record)
                    self.taken_over = reason
                    log.info("Lease on experiment %s taken over: %s", self.experiment, reason)
                    return reason
            raise LeaseHeldError(
                f"Experiment {self.experiment} is being claimed by another run right now (lease {self.uri}): "
                "pick another --experiment-name or wait"
            )

    def renew(self) -> None:
        """Push the expiry to now + ttl; `LeaseLostError` when another run holds the lease now."""
        if self.lost is not None:
            raise self.lost
        if not self.held:
            return
        with self._io_lock:
            for _ in range(3):
                current, token = self._read()
                if current is None or current.owner.id != self.owner.id:
                    holder = current.owner.describe() if current else "nobody (it was deleted)"
                    self.held = False
                    self.lost = LeaseLostError(
                        f"Lost the lease on experiment {self.experiment}: it is now held by {holder}. "
                        "This run stops so two runs never write the same checkpoints."
                    )
                    raise self.lost
                record = self._record(self.clock(), current.acquired_at)
                if self._replace(record, token):
                    self._held(record)
                    return
        raise StorageError(f"Could not renew the lease {self.uri}: it kept changing under this run")

    def release(self) -> bool:
        """Delete the lease if this owner still holds it; True when deleted."""
        self.stop_heartbeat()
        if not self.held:
            return False
        with self._io_lock:
            current, token = self._read()
            self.held = False
            if current is None or current.owner.id != self.owner.id or token is None:
                holder = current.owner.describe() if current is not None else "nobody this run can read"
                log.warning("Lease %s not released: it is held by %s now, not by this run", self.uri, holder)
                return False
            if not self.storage.delete_if_match(self.key, token):  # a 412, 409 or 404 from the store
                log.warning("Lease %s not released: the store refused the conditional delete (the lease changed "
                            "or went away meanwhile). It expires by itself by %s.", self.uri, _iso(self.expires_at))
                return False
        log.info("Lease on experiment %s released", self.experiment)
        return True

    def start_heartbeat(self, interval: float | None = None,
                        on_lost: Callable[[LeaseLostError], None] | None = None) -> None:
        """Renew from a daemon thread every `interval` seconds (ttl/3), until released.

        When another run has taken the lease, `on_lost` is told (the run stops at its next step).
        """
        if self._thread is not None:
            return
        interval = interval if interval is not None else max(0.5, self.ttl / 3)
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except LeaseLostError as exc:
                    if on_lost is not None:
                        on_lost(exc)
                    else:
                        log.error("%s", exc)
                    return
                except PokevqError as exc:  # S3 unreachable for a moment: the lease still has time left
                    log.warning("Could not renew the lease on experiment %s (%s); retrying in %.0fs",
                                self.experiment, exc, interval)

        self._thread = threading.Thread(target=beat, name=f"pokevq-lease-{self.experiment}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # ------------------------------------------------------------------ decisions
    def _record(self, now: float, acquired_at: float) -> LeaseRecord:
        return LeaseRecord(experiment=self.experiment, owner=self.owner, acquired_at=acquired_at,
                           expires_at=now + self.ttl)

    def _takeover_reason(self, current: LeaseRecord | None, now: float) -> str | None:
        if current is None:
            return self._unreadable_takeover(now)
        if current.owner.id == self.owner.id:
            return "it is this run's own lease (a retry)"
        if now >= current.expires_at:
            return f"the lease of {current.owner.describe()} expired at {_iso(current.expires_at)}"
        if (
            current.owner.hostname == self.owner.hostname
            and current.owner.pid != self.owner.pid
            and not _pid_alive(current.owner.pid)
        ):
            return f"{current.owner.describe()} no longer runs on this host"
        return None

    def _unreadable_takeover(self, now: float) -> str:
        """An unreadable lease is free once it was last written a whole ttl ago; before that, whoever wrote it
        may still be training (a run of a newer pokevq, or a write cut short): `LeaseHeldError`."""
        info = self.storage.head(self.key)
        written = info.last_modified.timestamp() if info is not None else now
        if now - written >= self.ttl:
            return f"the lease {self.uri} was unreadable and last written at {_iso(written)}, over {self.ttl:.0f} s ago"
        raise LeaseHeldError(
            f"The lease {self.uri} of experiment {self.experiment} is unreadable ({self._unreadable}) and was "
            f"written at {_iso(written)}, less than POKEVQ_LEASE_TTL ({self.ttl:.0f} s) ago: another run may hold "
            f"it. Wait until {_iso(written + self.ttl)}, or delete it if no run trains {self.experiment}."
        )

    def _held(self, record: LeaseRecord) -> None:
        self.held = True
        self.expires_at = record.expires_at
        self._acquired_at = record.acquired_at

    def _confirm(self, record: LeaseRecord) -> bool:
        """Re-read after a moment where conditional writes are not atomic; the last writer wins a race.

        S3 settles a race with its conditions, but S3-compatible stores (and moto) that ignore or race
        on `If-None-Match` exist: one extra read at the start of a run is cheap insurance.
        """
        if self.storage.atomic_conditions:
            return True
        time.sleep(self.race_delay)
        current, _ = self._read()
        return current is not None and current.owner.id == record.owner.id and current.expires_at == record.expires_at

    # ------------------------------------------------------------------ storage operations
    def _read(self) -> tuple[LeaseRecord | None, str | None]:
        """(record, token): token None when there is no lease; record None when it is unreadable."""
        try:
            data, token = self.storage.get_with_token(self.key)
        except ObjectNotFoundError:
            return None, None
        try:
            return LeaseRecord.from_bytes(data), token
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._unreadable = f"{type(exc).__name__}: {str(exc)[:120]}"
            log.warning("Lease %s is unreadable (%s)", self.uri, self._unreadable)
            return None, token

    def _create(self, record: LeaseRecord) -> bool:
        try:
            self.storage.put_if_absent(self.key, record.to_bytes())
        except PreconditionFailedError:
            return False
        return True

    def _replace(self, record: LeaseRecord, token: str | None) -> bool:
        if token is None:
            return self._create(record)
        try:
            self.storage.put_if_match(self.key, record.to_bytes(), token)
        except PreconditionFailedError:
            return False
        return True


__all__ = ["Lease", "LeaseHeldError", "LeaseLostError", "LeaseOwner", "LeaseRecord"]
