"""Durable task storage for the queue: SQLite in WAL mode, no I/O besides the database file.

All state of accepted tasks lives here, so "accepted" means "committed to the database":
a broker killed at any moment comes back with every task it acknowledged. Leases are
rows with a deadline (``lease_until``) and a random token; a settle (ack, nack, reject,
release) only counts when its token matches the current lease, so a worker that lost
its lease cannot settle somebody else's delivery. Time is always a parameter (``now``,
seconds since the epoch, because it has to survive a restart), never read here.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ("Lease", "QueueFullError", "TaskStore")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    key TEXT,
    leased INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    max_deliveries INTEGER,
    available_at REAL NOT NULL,
    lease_until REAL,
    token INTEGER,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (name, leased, id);
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (leased, lease_until);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_key ON tasks (name, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    payload BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    died_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_name ON dead (name, id);
"""

_MAX_ERROR = 8 * 1024


class QueueFullError(Exception):
    """The task name already has ``max_pending`` tasks stored."""


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    name: str
    payload: bytes
    deliveries: int
    token: int


class TaskStore:
    """Tasks, leases and dead letters in one SQLite file (or ``":memory:"``).

    ``counters`` count what happened since this store was opened: accepted,
    delivered, redelivered, acked, failed, dead_lettered, expired, stale settles...
    """

    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", default_max_deliveries: int = 5
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL", "OFF"):
            raise ValueError("synchronous must be NORMAL, FULL or OFF")
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        self.default_max_deliveries = default_max_deliveries
        self.counters: Counter[str] = Counter()
        self._rng = random.Random()
        # Stored (ready + leased) per name, kept in memory so admission costs no query.
        self._pending: Counter[str] = Counter(
            dict(self._db.execute("SELECT name, COUNT(*) FROM tasks GROUP BY name").fetchall())
        )
        self._shared = False
        # What the in-memory counts were when the open transaction began: a rollback restores them.
        self._saved: tuple[Counter[str], Counter[str]] | None = None
        self._write = _Write(self)

    def close(self) -> None:
        if self._shared or self._saved is not None:
            self.rollback()
        self._db.close()

    # -- transactions ----------------------------------------------------------
    #
    # Every write runs inside a transaction. Without ``begin()`` each call is its own
    # (committed before it returns). After ``begin()`` the calls share one, begun at the
    # first write, until ``commit()``: group commit, one COMMIT (one WAL write, one fsync
    # with synchronous=FULL) for many writes. A call that fails inside a shared
    # transaction rolls all of it back, since SQLite may already have undone part of it
    # (disk full, I/O error); ``shared`` is then False.

    @property
    def shared(self) -> bool:
        """Writes join a shared transaction (``begin()`` without ``commit()``/``rollback()`` yet)."""
        return self._shared

    def begin(self) -> None:
        if self._shared:
            raise RuntimeError("a shared transaction is already open")
        self._shared = True

    def commit(self) -> None:
        """Make the shared transaction durable; if that fails it is rolled back and the error raised."""
        self._shared = False
        if self._saved is None:
            return  # nothing was written
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._saved = None

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._saved = (self._pending.copy(), self.counters.copy())

    def rollback(self) -> None:
        """Undo the open transaction, and what it did to the in-memory counts."""
        self._shared = False
        saved, self._saved = self._saved, None
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the connection may have rolled back already
                self._db.execute("ROLLBACK")
        if saved is not None:
            # In place: callers may hold these counters.
            self._pending.clear()
            self._pending.update(saved[0])
            self.counters.clear()
            self.counters.update(saved[1])

    # -- producers -------------------------------------------------------------

    def pending(self, name: str) -> int:
        return self._pending[name]

    def enqueue(
        self,
        name: str,
        payload: bytes,
        *,
        now: float,
        max_pending: int,
        ttl: float | None = None,
        key: str | None = None,
    ) -> tuple[int, bool]:
        """Store one task; returns ``(id, duplicate)``. Raises ``QueueFullError``."""
        if key is not None:
            row = self._db.execute("SELECT id FROM tasks WHERE name = ? AND key = ?", (name, key)).fetchone()
            if row is not None:
                self.counters["duplicates"] += 1
                return int(row[0]), True
        if self._pending[name] >= max_pending:
            self.counters["rejected_full"] += 1
            raise QueueFullError(name)
        expires = None if ttl is None else now + ttl
        with self._write as db:
            cur = db.execute(
                "INSERT INTO tasks (name, payload, key, available_at, created_at, expires_at) "
                "VALUES (?,?,?,?,?,?)",
                (name, payload, key, now, now, expires),
            )
            self._pending[name] += 1
            self.counters["accepted"] += 1
        return int(cur.lastrowid or 0), False

    def enqueue_many(
        self,
        name: str,
        items: Iterable[tuple[bytes, float | None, str | None]],
        *,
        now: float,
        max_pending: int,
    ) -> list[int | None]:
        """``enqueue`` each ``(payload, ttl, key)`` in one transaction; ``None`` where the name was full.

        Items are stored in order, so a key repeated within the batch answers with the id
        stored by its first occurrence, as separate submits would.
        """
        out: list[int | None] = []
        pending = self._pending
        with self._write as db:
            for payload, ttl, key in items:
                if key is not None:
                    row = db.execute(
                        "SELECT id FROM tasks WHERE name = ? AND key = ?", (name, key)
                    ).fetchone()
                    if row is not None:
                        self.counters["duplicates"] += 1
                        out.append(int(row[0]))
                        continue
                if pending[name] >= max_pending:
                    self.counters["rejected_full"] += 1
                    out.append(None)
                    continue
                cur = db.execute(
                    "INSERT INTO tasks (name, payload, key, available_at, created_at, expires_at) "
                    "VALUES (?,?,?,?,?,?)",
                    (name, payload, key, now, now, None if ttl is None else now + ttl),
                )
                pending[name] += 1
                self.counters["accepted"] += 1
                out.append(int(cur.lastrowid or 0))
        return out

    # -- workers ---------------------------------------------------------------

    def claim(
        self,
        name: str,
        n: int,
        *,
        now: float,
        lease: float,
        max_deliveries: int | None = None,
        max_bytes: int = 1 << 20,
    ) -> list[Lease]:
        """Lease up to ``n`` ready tasks of ``name``, oldest first; expired ones are dropped.

        Stops early once ``max_bytes`` of payload are leased (always at least one task), so
        that one answer stays well inside the message size limit.
        """
        if n <= 0:
            return []
        out: list[Lease] = []
        size = 0
        # Read before writing: an empty claim (waiting workers polling) opens no transaction.
        rows = self._db.execute(
            "SELECT id, payload, deliveries, expires_at FROM tasks "
            "WHERE name = ? AND leased = 0 AND available_at <= ? ORDER BY id LIMIT ?",
            (name, now, n),
        ).fetchall()
        if not rows:
            return out
        expired: list[tuple[int]] = []
        updates: list[tuple[float, int, int | None, int]] = []
        until = now + lease
        for task_id, payload, deliveries, expires_at in rows:
            if out and size + len(payload) > max_bytes:
                break
            if expires_at is not None and expires_at <= now:
                expired.append((task_id,))
                continue
            token = self._rng.getrandbits(62)
            updates.append((until, token, max_deliveries, task_id))
            out.append(Lease(task_id, name, bytes(payload), deliveries + 1, token))
            size += len(payload)
        with self._write as db:
            # One statement for all the rows (executemany loops in C, one prepared statement).
            if expired:
                db.executemany("DELETE FROM tasks WHERE id = ?", expired)
                self._pending[name] -= len(expired)
                self.counters["expired"] += len(expired)
            db.executemany(
                "UPDATE tasks SET leased = 1, deliveries = deliveries + 1, lease_until = ?, token = ?, "
                "max_deliveries = COALESCE(?, max_deliveries) WHERE id = ?",
                updates,
            )
            self.counters["delivered"] += len(out)
            self.counters["redelivered"] += sum(1 for lease_ in out if lease_.deliveries > 1)
        return out

    def ack(self, task_id: int, token: int) -> bool:
        with self._write as db:
            row = db.execute(
                "DELETE FROM tasks WHERE id = ? AND token = ? AND leased = 1 RETURNING name", (task_id, token)
            ).fetchone()
            if row is None:
                self.counters["stale_settles"] += 1
                return False
            self._pending[row[0]] -= 1
            self.counters["acked"] += 1
        return True

    def ack_many(self, leases: Iterable[tuple[int, int]]) -> list[bool]:
        """``ack`` each ``(task id, token)`` in one transaction; False where the lease was already lost."""
        out: list[bool] = []
        pending = self._pending
        with self._write as db:
            for task_id, token in leases:
                row = db.execute(
                    "DELETE FROM tasks WHERE id = ? AND token = ? AND leased = 1 RETURNING name",
                    (task_id, token),
                ).fetchone()
                if row is None:
                    self.counters["stale_settles"] += 1
                    out.append(False)
                    continue
                pending[row[0]] -= 1
                self.counters["acked"] += 1
                out.append(True)
        return out

    def nack(self, task_id: int, token: int, error: str, *, now: float, retry_after: float) -> str:
        """A failed delivery: back to ready after ``retry_after``, or dead. Returns retry/dead/stale."""
        with self._write as db:
            return self._nack(db, task_id, token, error, now, retry_after)

    def nack_many(self, items: Iterable[tuple[int, int, str, float]], *, now: float) -> list[str]:
        """``nack`` each ``(task id, token, error, retry_after)`` in one transaction."""
        with self._write as db:
            return [self._nack(db, *item, now) for item in items]

    def _nack(
        self, db: sqlite3.Connection, task_id: int, token: int, error: str, now: float, retry_after: float
    ) -> str:
        row = db.execute(
            "SELECT deliveries, COALESCE(max_deliveries, ?) FROM tasks "
            "WHERE id = ? AND token = ? AND leased = 1",
            (self.default_max_deliveries, task_id, token),
        ).fetchone()
        if row is None:
            self.counters["stale_settles"] += 1
            return "stale"
        self.counters["failed"] += 1
        deliveries, max_deliveries = row
        if deliveries >= max_deliveries:
            self._bury(task_id, "failed", error[-_MAX_ERROR:], now)
            return "dead"
        db.execute(
            "UPDATE tasks SET leased = 0, token = NULL, lease_until = NULL, available_at = ?, "
            "last_error = ? WHERE id = ?",
            (now + max(0.0, retry_after), error[-_MAX_ERROR:], task_id),
        )
        return "retry"

    def reject(self, task_id: int, token: int, reason: str, *, now: float) -> bool:
        """Dead-letter at once: the payload can never succeed (it does not validate)."""
        with self._write as db:
            row = db.execute(
                "SELECT 1 FROM tasks WHERE id = ? AND token = ? AND leased = 1", (task_id, token)
            ).fetchone()
            if row is None:
                self.counters["stale_settles"] += 1
                return False
            self.counters["invalid"] += 1
            self._bury(task_id, "invalid", reason[-_MAX_ERROR:], now)
        return True

    def release(self, task_id: int, token: int) -> bool:
        """Give a delivery back unrun (worker shutting down): ready at once, not counted as a try."""
        with self._write as db:
            return self._release(db, task_id, token)

    def release_many(self, leases: Iterable[tuple[int, int]]) -> int:
        """``release`` each, in one transaction; returns how many were still held."""
        with self._write as db:
            return sum(self._release(db, task_id, token) for task_id, token in leases)

    def _release(self, db: sqlite3.Connection, task_id: int, token: int) -> bool:
        cur = db.execute(
            "UPDATE tasks SET leased = 0, token = NULL, lease_until = NULL, deliveries = deliveries - 1 "
            "WHERE id = ? AND token = ? AND leased = 1",
            (task_id, token),
        )
        if cur.rowcount:
            self.counters["released"] += 1
            return True
        self.counters["stale_settles"] += 1
        return False

    def renew(self, leases: Iterable[tuple[int, int]], *, now: float, lease: float) -> list[tuple[int, int]]:
        """Extend leases; returns those no longer held (expired, maybe given to another worker)."""
        lost: list[tuple[int, int]] = []
        with self._write as db:
            for task_id, token in leases:
                cur = db.execute(
                    "UPDATE tasks SET lease_until = ? WHERE id = ? AND token = ? AND leased = 1",
                    (now + lease, task_id, token),
                )
                if not cur.rowcount:
                    lost.append((task_id, token))
            self.counters["leases_lost"] += len(lost)
        return lost

    def expire_leases(self, now: float) -> list[str]:
        """Leases past their deadline (worker killed, frozen, cut off) are failed deliveries.

        Returns the names that got tasks back, so waiting workers can be woken.
        """
        rows = self._db.execute(
            "SELECT id, name, deliveries, COALESCE(max_deliveries, ?) FROM tasks "
            "WHERE leased = 1 AND lease_until < ?",
            (self.default_max_deliveries, now),
        ).fetchall()
        names: set[str] = set()
        if not rows:
            return []
        with self._write as db:
            for task_id, name, deliveries, max_deliveries in rows:
                self.counters["lease_expired"] += 1
                if deliveries >= max_deliveries:
                    self._bury(task_id, "lease_expired", "the lease expired (worker lost or stuck)", now)
                    continue
                db.execute(
                    "UPDATE tasks SET leased = 0, token = NULL, lease_until = NULL, available_at = ?, "
                    "last_error = 'lease expired' WHERE id = ?",
                    (now, task_id),
                )
                names.add(name)
        return sorted(names)

    def _bury(self, task_id: int, reason: str, error: str, now: float) -> None:
        """Move a task to the dead letters; only inside ``self._write``."""
        row = self._db.execute(
            "DELETE FROM tasks WHERE id = ? RETURNING name, payload, deliveries, created_at", (task_id,)
        ).fetchone()
        if row is None:
            return
        name, payload, deliveries, created_at = row
        self._db.execute(
            "INSERT OR REPLACE INTO dead (id, name, payload, deliveries, reason, error, created_at, died_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (task_id, name, payload, deliveries, reason, error, created_at, now),
        )
        self._pending[name] -= 1
        self.counters["dead_lettered"] += 1

    # -- dead letters ----------------------------------------------------------

    def dead_letters(
        self, *, name: str | None = None, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, name, payload, deliveries, reason, error, created_at, died_at FROM dead "
            "WHERE id > ? AND (? IS NULL OR name = ?) ORDER BY id LIMIT ?",
            (after, name, name, max(0, min(limit, 1000))),
        ).fetchall()
        keys = ("id", "name", "payload", "deliveries", "reason", "error", "created_at", "died_at")
        return [dict(zip(keys, (*r[:2], bytes(r[2]), *r[3:]), strict=True)) for r in rows]

    def _select_dead(self, ids: Iterable[int] | None, name: str | None) -> str:
        where = "(? IS NULL OR name = ?)"
        if ids is not None:
            where += f" AND id IN ({','.join(str(int(i)) for i in ids) or 'NULL'})"
        return where

    def replay(self, ids: Iterable[int] | None, *, name: str | None = None, now: float) -> int:
        """Move dead letters back to the queue with a fresh delivery count."""
        where = self._select_dead(ids, name)
        with self._write as db:
            rows = db.execute(
                f"DELETE FROM dead WHERE {where} RETURNING id, name, payload, created_at",  # ids are ints
                (name, name),
            ).fetchall()
            for task_id, task_name, payload, created_at in rows:
                db.execute(
                    "INSERT INTO tasks (id, name, payload, available_at, created_at) VALUES (?,?,?,?,?)",
                    (task_id, task_name, payload, now, created_at),
                )
                self._pending[task_name] += 1
            self.counters["replayed"] += len(rows)
        return len(rows)

    def purge(self, ids: Iterable[int] | None, *, name: str | None = None) -> int:
        where = self._select_dead(ids, name)
        with self._write as db:
            cur = db.execute(f"DELETE FROM dead WHERE {where}", (name, name))  # ids are ints
            self.counters["purged"] += cur.rowcount
        return cur.rowcount

    # -- observing -------------------------------------------------------------

    def depth(self, now: float) -> dict[str, dict[str, int]]:
        """Per task name: ready, delayed (waiting for a retry), leased, dead."""
        out: dict[str, dict[str, int]] = {}
        for name, leased, delayed, count in self._db.execute(
            "SELECT name, leased, available_at > ?, COUNT(*) FROM tasks "
            "GROUP BY name, leased, available_at > ?",
            (now, now),
        ):
            row = out.setdefault(name, {"ready": 0, "delayed": 0, "leased": 0, "dead": 0})
            row["leased" if leased else "delayed" if delayed else "ready"] += count
        for name, count in self._db.execute("SELECT name, COUNT(*) FROM dead GROUP BY name"):
            out.setdefault(name, {"ready": 0, "delayed": 0, "leased": 0, "dead": 0})["dead"] = count
        return out


class _Write:
    """``with store._write as db``: join the open transaction, or run in one of its own.

    A plain class rather than ``contextlib.contextmanager``: it runs for every write.
    """

    __slots__ = ("_own", "_store")

    def __init__(self, store: TaskStore) -> None:
        self._store = store
        self._own = False

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        # Not reentrant, but never nested: one write runs at a time (the event loop's thread).
        self._own = not store._shared
        if store._saved is None:
            store._begin()
        return store._db

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._store.rollback()  # all of a shared transaction: SQLite may have undone part of it
        elif self._own:
            self._store.commit()
