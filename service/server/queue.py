"""The persistent study queue: table `liandan_queue`, in the same database as the Optuna storage.

    POST /studies ──► submit (queued) ──► claim (running, worker_id, heartbeat)
                                              │ worker beats every few seconds
                         cancel ──► cancel_requested ──► the run stops ──► cancelled
                                              ▼
                                       finish (done | failed | cancelled)

A row is the service's memory of a study: it survives a restart of every process. A claim
is one `UPDATE … WHERE state='queued'` whose row count says who won, so two workers never
run one study (on PostgreSQL the candidate is also picked `FOR UPDATE SKIP LOCKED`, so
workers do not queue up behind each other's locks). A `running` row whose worker stopped
beating is put back to `queued`; running it again resumes it (`run_study` keeps finished
trials and re-runs the ones the dead worker left behind).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from service.store.engine import make_engine  # one engine/WAL setup; exported here as before
from service.store.optuna_adapter import name_in_storage

__all__ = ["CLUSTER_TABLE", "QUEUE_TABLE", "RESUMABLE", "STATES", "QueueEntry", "StudyExists",
           "StudyQueue", "make_engine"]

State = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[State, ...] = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
ERROR_MAX_CHARS = 4000

metadata = sa.MetaData()
QUEUE_TABLE = sa.Table(
    "liandan_queue", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),  # the validated spec, JSON
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("total_trials", sa.Integer, nullable=False),  # the plan's, for progress
    sa.Column("created", sa.DateTime, nullable=False),  # naive UTC, as every column here
    sa.Column("updated", sa.DateTime, nullable=False),
    sa.Column("worker_id", sa.String(128)),
    sa.Column("heartbeat", sa.DateTime),
    sa.Column("error", sa.Text),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
)
Q = QUEUE_TABLE.c
# What the service's Ray cluster can hold, as last seen by whoever is attached to it (the
# serve process that started a local head, or a worker on --ray-address): the API reads it
# to refuse a trial no node can hold, without joining Ray itself.
CLUSTER_TABLE = sa.Table(
    "liandan_cluster", metadata,
    sa.Column("ray_address", sa.String(255), primary_key=True),
    sa.Column("nodes", sa.Text, nullable=False),  # JSON: [{"cpu": 2.0, "gpu": 0.0}, ...]
    sa.Column("updated", sa.DateTime, nullable=False),
)
RESUMABLE = ("cancelled", "failed")


class StudyExists(ValueError):
    """A study of this name is already queued, ran, or is in the Optuna storage."""


@dataclass(frozen=True)
class QueueEntry:
    name: str
    spec: dict[str, Any]
    state: State
    total_trials: int
    created: datetime
    updated: datetime
    worker_id: str | None
    heartbeat: datetime | None
    error: str | None
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: Any) -> QueueEntry:
        m = row._mapping
        return cls(m["name"], json.loads(m["spec"]), m["state"], m["total_trials"],
                   _aware(m["created"]), _aware(m["updated"]), m["worker_id"],
                   _aware(m["heartbeat"]), m["error"], bool(m["cancel_requested"]))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


class StudyQueue:
    """The queue's operations; every one is a short transaction of its own."""

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        self.postgres = self.engine.dialect.name == "postgresql"

    def setup(self) -> StudyQueue:
        """Create the Optuna tables (if new) and the queue table."""
        from service.store.storage import open_storage

        open_storage(self.url).remove_session()
        metadata.create_all(self.engine, checkfirst=True)
        return self

    # -- submitting ------------------------------------------------------------------
    def name_taken(self, conn: Connection, name: str) -> bool:
        """True when `name` is queued, ran, or names a study (or arm) in the Optuna storage."""
        if conn.execute(sa.select(Q.name).where(Q.name == name)).first():
            return True
        return name_in_storage(conn, name)

    def submit(self, name: str, spec: dict[str, Any], total_trials: int) -> QueueEntry:
        """Queue a validated spec; StudyExists when the name is taken anywhere."""
        now = _now()
        try:
            with self.engine.begin() as conn:
                if self.name_taken(conn, name):
                    raise StudyExists(name)
                conn.execute(QUEUE_TABLE.insert().values(
                    name=name, spec=json.dumps(spec), state="queued", total_trials=total_trials,
                    created=now, updated=now, cancel_requested=False))
        except sa.exc.IntegrityError:  # lost a race to a submission of the same name
            raise StudyExists(name) from None
        entry = self.get(name)
        assert entry is not None
        return entry

    # -- reading ---------------------------------------------------------------------
    def get(self, name: str) -> QueueEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(QUEUE_TABLE).where(Q.name == name)).first()
        return None if row is None else QueueEntry.from_row(row)

    def entries(self, limit: int = 1000, offset: int = 0) -> list[QueueEntry]:
        query = sa.select(QUEUE_TABLE).order_by(Q.created, Q.name).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [QueueEntry.from_row(row) for row in conn.execute(query)]

    def state_counts(self) -> Counter:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(Q.state, sa.func.count()).group_by(Q.state))
            return Counter({state: n for state, n in rows})

    def cancel_requested(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(
                sa.select(Q.cancel_requested).where(Q.name == name)).scalar())

    # -- cancelling ------------------------------------------------------------------
    def request_cancel(self, name: str) -> QueueEntry | None:
        """A queued study is cancelled at once; a running one is asked to stop (its worker
        sees `cancel_requested` within about a second). Finished ones are left as they are."""
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(QUEUE_TABLE.update().where(Q.name == name, Q.state == "queued")
                         .values(state="cancelled", cancel_requested=True, updated=now))
            conn.execute(QUEUE_TABLE.update().where(Q.name == name, Q.state == "running")
                         .values(cancel_requested=True, updated=now))
        return self.get(name)

    # -- resuming --------------------------------------------------------------------
    def resume(self, name: str) -> tuple[QueueEntry | None, bool]:
        """A cancelled or failed study back to `queued`: its next run keeps the finished
        trials and runs what is left of the budget. Other states are left as they are.
        Returns the row (None: no such study) and whether it was resumed."""
        with self.engine.begin() as conn:
            resumed = conn.execute(
                QUEUE_TABLE.update().where(Q.name == name, Q.state.in_(RESUMABLE))
                .values(state="queued", cancel_requested=False, error=None, worker_id=None,
                        heartbeat=None, updated=_now())).rowcount == 1
        return self.get(name), resumed

    # -- the cluster -----------------------------------------------------------------
    def record_cluster(self, ray_address: str, nodes: list[dict[str, Any]]) -> None:
        """Note the live nodes of the Ray cluster at `ray_address` (`ray.nodes()` entries)."""
        values = {"nodes": json.dumps(nodes), "updated": _now()}
        row = CLUSTER_TABLE.c.ray_address == ray_address
        for _ in range(3):  # an insert may lose a race to another recorder: update then
            try:
                with self.engine.begin() as conn:
                    if not conn.execute(CLUSTER_TABLE.update().where(row)
                                        .values(**values)).rowcount:
                        conn.execute(CLUSTER_TABLE.insert().values(ray_address=ray_address,
                                                                   **values))
                return
            except sa.exc.IntegrityError:
                continue

    def cluster(self, ray_address: str | None) -> list[dict[str, Any]] | None:
        """The nodes last recorded for `ray_address`; None when nobody has recorded them."""
        if not ray_address:
            return None
        with self.engine.connect() as conn:
            nodes = conn.execute(sa.select(CLUSTER_TABLE.c.nodes).where(
                CLUSTER_TABLE.c.ray_address == ray_address)).scalar()
        return None if nodes is None else json.loads(nodes)

    # -- working ---------------------------------------------------------------------
    def claim(self, worker_id: str) -> QueueEntry | None:
        """The oldest queued study, now `running` for `worker_id`; None when none is left."""
        for _ in range(8):  # another worker may win each candidate; try the next one
            pick = (sa.select(Q.name).where(Q.state == "queued")
                    .order_by(Q.created, Q.name).limit(1))
            if self.postgres:
                pick = pick.with_for_update(skip_locked=True)
            with self.engine.begin() as conn:
                name = conn.execute(pick).scalar()
                if name is None:
                    return None
                now = _now()
                won = conn.execute(
                    QUEUE_TABLE.update().where(Q.name == name, Q.state == "queued")
                    .values(state="running", worker_id=worker_id, heartbeat=now, updated=now,
                            error=None)).rowcount == 1
            if won:
                return self.get(name)
        return None

    def beat(self, name: str, worker_id: str) -> bool:
        """Record that `worker_id` still runs `name`; False when it no longer owns it."""
        now = _now()
        with self.engine.begin() as conn:
            return conn.execute(
                QUEUE_TABLE.update()
                .where(Q.name == name, Q.worker_id == worker_id, Q.state == "running")
                .values(heartbeat=now)).rowcount == 1

    def finish(self, name: str, worker_id: str, state: State, error: str | None = None) -> bool:
        """Record how the run ended (`queued` hands it back); False when no longer ours."""
        values: dict[str, Any] = {"state": state, "updated": _now(),
                                  "error": error[-ERROR_MAX_CHARS:] if error else None}
        if state == "queued":
            values.update(worker_id=None, heartbeat=None)
        with self.engine.begin() as conn:
            return conn.execute(
                QUEUE_TABLE.update()
                .where(Q.name == name, Q.worker_id == worker_id, Q.state == "running")
                .values(**values)).rowcount == 1

    def note_error(self, name: str, error: str) -> None:
        """Attach a problem to a finished study (a report that could not be written)."""
        with self.engine.begin() as conn:
            conn.execute(QUEUE_TABLE.update().where(Q.name == name)
                         .values(error=error[-ERROR_MAX_CHARS:], updated=_now()))

    def requeue_stale(self, older_than_s: float) -> list[str]:
        """Put back every running study whose worker has not beaten for `older_than_s`
        (a pending cancel is carried out instead)."""
        return self._requeue(Q.heartbeat < _now() - timedelta(seconds=older_than_s))

    def requeue_worker(self, worker_id: str) -> list[str]:
        """Put back the studies of a worker that is known dead (its process exited)."""
        return self._requeue(Q.worker_id == worker_id)

    def requeue_running(self) -> list[str]:
        """Put back every running study: at the start of a single-node serve, their workers
        were this node's and are gone."""
        return self._requeue(sa.true())

    def _requeue(self, condition: Any) -> list[str]:
        with self.engine.begin() as conn:
            names = list(conn.execute(
                sa.select(Q.name).where(Q.state == "running", condition)).scalars())
            if names:
                # A study whose cancel was pending is cancelled, not run again.
                conn.execute(QUEUE_TABLE.update().where(Q.name.in_(names), Q.state == "running")
                             .values(state=sa.case((Q.cancel_requested, "cancelled"),
                                                   else_="queued"),
                                     worker_id=None, heartbeat=None, updated=_now(),
                                     error="requeued: its worker stopped"))
        return names

    def close(self) -> None:
        self.engine.dispose()
