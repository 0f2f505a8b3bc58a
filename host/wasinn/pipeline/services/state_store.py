"""The `state-store` interface's semantics, once, over two stores: `EmbeddedStore` (a
SQLite file the workers of one host share; this module) and `RedisStore` (Redis or
Valkey, shared across hosts; redis_store.py).

What every store does, as Azure IoT Operations' state store does it:
- Every write gets a version: an HLC timestamp, returned with `get` and with the write.
  Versions grow across the whole store, as the broker's single clock makes Azure's: each
  is the writer's clock or, where that is not ahead, one count past the last version the
  store issued (kept in the store), so a lease taken after another expired carries a
  later token even from a host whose clock is behind.
- `set` conditions: `unconditional`; `only-if-does-not-exist`; `only-if-equal-or-does-not-
  exist` (sets when the key is absent or already holds this value). A set that a condition
  refused returns false, not an error. `expires` gives the key a time to live.
- Fencing tokens: a write (set, del, vdel) that carries one is refused when the key holds
  a newer one; one that succeeds stores its token with the key. A key that holds a token
  refuses writes without one. (A lease holder passes the lease key's version as its token,
  so a holder whose lease was taken over cannot overwrite its successor's writes.)
- `del` returns 1 or 0 (deleted, absent); `vdel` deletes only when the key holds this
  value: 1, 0 (absent) or -1 (another value).
- Limits: a key is at most `max-state-key-bytes`, a value at most `max-tensor-bytes`,
  and an operator holds at most `max-state-keys` live keys it created. What breaks one is
  a `StateError` whose text names the limit (the guest gets `request-error`).
"""
from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import tempfile
import threading
import time
import weakref
from typing import Protocol

from ...errors import WasinnError
from .clock import HybridClock, Timestamp


class StateError(Exception):
    """A request the store refused; the text says why (-> `request-error`)."""


class StateUnavailable(Exception):
    """The store could not be reached in time (-> `timeout`)."""


def encode_version(ts: Timestamp) -> str:
    """Versions and fencing tokens are stored as text that sorts as the timestamps do."""
    return f"{ts.wall:020d}.{ts.counter:020d}.{ts.node_id}"


def after(version: Timestamp, last: Timestamp | None) -> Timestamp:
    """`version`, or where the store already issued one at or past it, the next count."""
    if last is None or encode_version(version) > encode_version(last):
        return version
    return Timestamp.of(last.wall, last.counter + 1, version.node_id)


def decode_version(text: str | bytes | None) -> Timestamp | None:
    if not text:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    wall, counter, node = text.split(".", 2)
    return Timestamp.of(int(wall), int(counter), node)


class StateStore(Protocol):
    """One state store; `owner` is the operator that writes (for its key count)."""

    def get(self, key: bytes) -> tuple[bytes | None, Timestamp | None]: ...

    def set(self, owner: str, key: bytes, value: bytes, *, condition: str = "unconditional",
            expires: float | None = None, fencing: Timestamp | None = None,
            max_keys: int = 0, max_bytes: int = 0) -> tuple[bool, Timestamp | None]: ...

    def delete(self, key: bytes, *, value: bytes | None = None,
               fencing: Timestamp | None = None) -> tuple[int, Timestamp | None]: ...

    def close(self) -> None: ...


# The keys that are the host's (every graph's accumulate windows: their lock, index,
# staged messages and leases, windows.py). Operators share the store's key space and may
# use no key that starts with it (imports.py): with one they read the messages staged in
# a window (another graph's, on a shared Redis) or take the windows' lock for good.
HOST_KEYS = b"wasinn/"
# The longest time to live a key may be given: the embedded store keeps the end as
# nanoseconds in a 64-bit integer (to 2262), and a guest's u64 seconds overflowed it.
MAX_EXPIRY_SECONDS = 100 * 365 * 86400
# The expired keys a write of the embedded store drops before its own, and their bytes
# of values (past which it drops no more than the first): 10,000 keys of 6 KB expiring
# together, dropped at once, held the store (and every operator's next write) 78 ms; a
# batch costs ~0.5 ms. Counted in keys alone, a batch of 2 MB values held it 0.23 s (33
# of them, one operator's max-state-bytes; three such operators, 0.46 s); dropping 1 MiB
# costs ~4 ms, and one key at most 2.7 MB (wasmtime's bound on a value a call passes).
PURGE_BATCH = 64
PURGE_BYTES = 1 << 20
# The write-ahead log's file is cut back to this after a checkpoint: it had kept the
# size of its largest transaction (131 MB of tmpfs after a mass expiry's purge).
WAL_FILE_BYTES = 16 << 20


def fencing_refusal(stored: str | None, given: Timestamp | None) -> str | None:
    """Why a write with fencing token `given` is refused on a key holding `stored`."""
    if stored and given is None:
        return "the key is protected by a fencing token; the request carries none"
    if stored and given is not None and encode_version(given) < stored:
        return "the request's fencing token is older than the key's"
    return None


def too_many_keys(owner: str, max_keys: int) -> str:
    return (f"operator {owner!r} holds {max_keys} live state-store keys; the limit is {max_keys} "
            "(limit 'max-state-keys', --max-state-keys)")


def too_many_bytes(owner: str, held: int, n: int, max_bytes: int) -> str:
    return (f"operator {owner!r} keeps {held} bytes of values in the state store; {n} more would pass the "
            f"limit of {max_bytes} (limit 'max-state-bytes', --max-state-bytes)")


class EmbeddedStore:
    """A state store in a SQLite file, shared by every process that opens the same `path`
    (the workers of one `wasinn serve`); a private temporary file without one. SQLite's
    file locks make each request atomic across those processes; writes are not synced to
    disk (the store lives as long as the service, as the broker's own store does)."""

    def __init__(self, path: str | os.PathLike | None = None, node_id: str | None = None):
        self._own_file = path is None
        if path is None:
            fd, path = tempfile.mkstemp(prefix="wasinn-state-", suffix=".sqlite",
                                        dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
            os.close(fd)
        self.path = os.fspath(path)
        self.clock = HybridClock(node_id or f"embedded-{os.getpid()}")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_FILE_BYTES}")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, "
                         "version TEXT NOT NULL, fencing TEXT, owner TEXT NOT NULL, expires INTEGER)")
        self._db.execute("CREATE INDEX IF NOT EXISTS kv_owner ON kv (owner)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        # the bytes of each creator's values, kept as they change (max-state-bytes): a sum
        # over an operator's 10,000 keys took 1 ms a write
        with self._transaction():
            if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'usage'").fetchone():
                self._db.execute("CREATE TABLE usage (owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL)")
                self._db.execute("INSERT INTO usage SELECT owner, SUM(length(value)) FROM kv GROUP BY owner")
        # every write first drops what expired: by an index that holds what the drop counts
        # too (its creator, its size), so no row is read. A value is stored before the
        # columns after it, so reading a row's owner walked the whole value: the expired
        # keys' query over 33 values of 2 MB took 25 ms, not 0.1 (and the index of old
        # stores, on `expires` alone, goes)
        self._db.execute("CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires, owner, length(value)) "
                         "WHERE expires IS NOT NULL")
        self._db.execute("DROP INDEX IF EXISTS kv_expires")
        # a private file goes with its store even when nobody closes it
        self._finalizer = weakref.finalize(self, _remove, self._db, self.path if self._own_file else None)

    def _purge(self, now: int) -> None:
        """Drops at most PURGE_BATCH of the keys that expired, the longest expired first,
        and past PURGE_BYTES of their values no more than the first: a write adds at most
        one key and drops at least one, so the expired keys left behind only dwindle, and
        no write pays for a mass expiry. Until dropped, an expired key is absent to every
        request (`_live_row`) and to its creator's quotas."""
        candidates = self._db.execute("SELECT rowid, owner, length(value) FROM kv WHERE expires IS NOT NULL AND "
                                      "expires <= ? ORDER BY expires LIMIT ?", (now, PURGE_BATCH)).fetchall()
        rows, size = [], 0
        for row in candidates:
            size += row[2]
            if rows and size > PURGE_BYTES:
                break
            rows.append(row)
        if not rows:
            return
        freed: dict[str, int] = {}
        for _, owner, n in rows:
            freed[owner] = freed.get(owner, 0) + n
        for owner, n in freed.items():
            self._count(owner, -n)
        self._db.execute(f"DELETE FROM kv WHERE rowid IN ({','.join('?' * len(rows))})", [r[0] for r in rows])

    def _live_row(self, key: bytes, now: int):
        """The key's (value, fencing, owner), or None where it is absent or expired (an
        expired one is dropped here: the batch purge may not have reached it yet)."""
        row = self._db.execute("SELECT value, fencing, owner, expires FROM kv WHERE key = ?", (key,)).fetchone()
        if row is not None and row[3] is not None and row[3] <= now:
            self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._count(row[2], -len(row[0]))
            return None
        return row

    def _expired_of(self, owner: str, now: int) -> tuple[int, int]:
        """How many of an operator's keys, and how many bytes of values, expired and are
        not purged yet: left out of its quotas (read only when a quota would refuse)."""
        n, size = self._db.execute("SELECT COUNT(*), SUM(length(value)) FROM kv INDEXED BY kv_expiry WHERE "
                                   "owner = ? AND expires IS NOT NULL AND expires <= ?", (owner, now)).fetchone()
        return n, size or 0

    def _count(self, owner: str, n: int) -> None:
        self._db.execute("INSERT INTO usage (owner, bytes) VALUES (?, ?) ON CONFLICT (owner) "
                         "DO UPDATE SET bytes = bytes + excluded.bytes", (owner, n))

    def get(self, key: bytes) -> tuple[bytes | None, Timestamp | None]:
        now = time.time_ns()
        with self._lock:
            row = self._db.execute("SELECT value, version FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)",
                                   (key, now)).fetchone()
        return (None, None) if row is None else (row[0], decode_version(row[1]))

    def set(self, owner: str, key: bytes, value: bytes, *, condition: str = "unconditional",
            expires: float | None = None, fencing: Timestamp | None = None,
            max_keys: int = 0, max_bytes: int = 0) -> tuple[bool, Timestamp | None]:
        now = time.time_ns()
        with self._lock, self._transaction():
            self._purge(now)
            row = self._live_row(key, now)
            refusal = fencing_refusal(row[1] if row else None, fencing)
            if refusal:
                raise StateError(refusal)
            if row is not None and (condition == "only-if-does-not-exist" or
                                    (condition == "only-if-equal-or-does-not-exist" and row[0] != value)):
                return False, None
            if row is None and max_keys:
                (held,) = self._db.execute("SELECT COUNT(*) FROM kv WHERE owner = ?", (owner,)).fetchone()
                if held >= max_keys and held - self._expired_of(owner, now)[0] >= max_keys:
                    raise StateError(too_many_keys(owner, max_keys))
            grows = len(value) - (len(row[0]) if row else 0)
            creator = row[2] if row else owner  # counted against the key's creator, as its keys are
            if max_bytes and grows > 0:
                held = self._db.execute("SELECT bytes FROM usage WHERE owner = ?", (creator,)).fetchone()
                held = held[0] if held else 0
                if held + grows > max_bytes:
                    held -= self._expired_of(creator, now)[1]
                    if held + grows > max_bytes:
                        raise StateError(too_many_bytes(creator, held, grows, max_bytes))
            self._count(creator, grows)
            version = self._version()
            token = encode_version(fencing) if fencing is not None else (row[1] if row else None)
            until = None if expires is None else now + int(expires * 1e9)
            self._db.execute("INSERT INTO kv (key, value, version, fencing, owner, expires) VALUES (?, ?, ?, ?, ?, ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, "
                             "fencing = excluded.fencing, expires = excluded.expires",
                             (key, value, encode_version(version), token, owner, until))
            return True, version

    def delete(self, key: bytes, *, value: bytes | None = None,
               fencing: Timestamp | None = None) -> tuple[int, Timestamp | None]:
        now = time.time_ns()
        with self._lock, self._transaction():
            self._purge(now)
            row = self._live_row(key, now)
            if row is None:
                return 0, None
            refusal = fencing_refusal(row[1], fencing)
            if refusal:
                raise StateError(refusal)
            if value is not None and row[0] != value:
                return -1, None
            self._db.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._count(row[2], -len(row[0]))
            return 1, self._version()

    def _version(self) -> Timestamp:
        """The next version (inside a write transaction)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()
        version = after(self.clock.now(), decode_version(row[0]) if row else None)
        self.clock.receive(version)
        self._db.execute("INSERT INTO meta (name, value) VALUES ('version', ?) ON CONFLICT (name) "
                         "DO UPDATE SET value = excluded.value", (encode_version(version),))
        return version

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")  # the write lock first: read-check-write is atomic across processes

            def __exit__(self, kind, *_):
                db.execute("COMMIT" if kind is None or issubclass(kind, StateError) else "ROLLBACK")
        return _Tx()

    def close(self) -> None:
        self._finalizer()


def _remove(db: sqlite3.Connection, path: str | None) -> None:
    db.close()
    for suffix in ("", "-wal", "-shm") if path else ():
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def seed(store: StateStore, path: str | os.PathLike) -> int:
    """Sets the keys of a seed file (`--state-seed FILE`, Azure's statestore.json): JSON,
    a list of objects (or one object) of key to value; a value that is not a string is
    stored as its JSON text. Returns how many keys were set; the owner is "seed"."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except OSError as e:
        raise WasinnError(f"--state-seed {path}: {e.strerror}") from None
    except ValueError as e:
        raise WasinnError(f"--state-seed {path}: not JSON: {e}") from None
    entries = data if isinstance(data, list) else [data]
    if not all(isinstance(e, dict) for e in entries):
        raise WasinnError(f"--state-seed {path}: expected an object of keys to values, or a list of them")
    count = 0
    for entry in entries:
        for key, value in entry.items():
            text = value if isinstance(value, str) else json.dumps(value)
            store.set("seed", key.encode(), text.encode())
            count += 1
    return count
