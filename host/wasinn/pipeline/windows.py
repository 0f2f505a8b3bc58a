"""Accumulate windows in the state store, shared by every worker of a graph (the embedded
store: the workers of one host; Redis: every host).

A message reaching an accumulate node is staged in the window of its timestamp (the one
a delay node moved to the window's end; without a delay, its own): appended to the
window's key under the graph's lock, a lease (`only-if-does-not-exist` with an expiry).
Each holder of the lock passes the version of its lock as the fencing token of every
write it makes, so a holder whose lease ran out cannot overwrite its successor's writes
(versions grow across the whole store, whatever the writers' clocks: state_store.py).
Once staged, the message is acknowledged: an open window costs the broker nothing
(receiveMaximum does not depend on window sizes), and it survives a worker's death.

When the window's time has come (its timestamp is past on the worker's clock) one
worker takes the window's emit lease and folds it; the window is removed when the
result is published. A worker that dies in between leaves the lease to expire and the
window to the next worker: the window is emitted again with the same id and timestamp.
A message staged after its window was folded (another host's clock behind, or a message
that waited at the broker) is not lost: the window is emitted again for the late ones,
with the id `window:NODE:TIME+N` (N: the messages emitted before).

A store that cannot be reached (a Redis restart, a network outage) holds the message:
`stage` tries again until the store is back, so the message is not acknowledged before
it is staged, and the broker keeps the ones behind it. A try whose answer was lost may
have been done: each staging carries its own token, which a retry finds in the window
instead of staging the message twice, and it takes the lock again with the same value
(`only-if-equal-or-does-not-exist`), so it need not wait out its own lease. `emitted`
records how far a window was emitted (not how many more), so that it can be repeated.
What was staged survives a restart of the store only if the store keeps it: Redis with
its append-only file (`appendonly yes`); see pipelines/README.md.
"""
from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Iterator

from ..errors import WasinnError
from .services.clock import Timestamp
from .services.state_store import StateError, StateUnavailable

LEASE_SECONDS = 10.0
_LOCK_WAIT_SECONDS = 15.0
# A window's messages are kept in chunks of at most this many, closed once they hold this
# many bytes (keys of their own), and only the last, open chunk is read and written again
# to stage one: staging costs the same in a window of ten messages and in one of ten
# thousand. (Closed by count alone, 30 messages of 2 MB each rewrote up to 60 MB a
# staging, 0.34 s inside one write of the store every worker of the host shares: another
# operator's calls ran 336 ms past a 0.1 s deadline.)
CHUNK_MESSAGES = 32
CHUNK_BYTES = 1 << 20
# A message staged as more bytes than a chunk's goes into keys of its own, CHUNK_BYTES
# each, written one at a time before the window takes it, and the chunk holds a stub
# naming them: as one write, a 60 MB message held the store 0.18 s (another operator on
# it ran 87 ms past its deadline).
# How often a worker waiting for the lock tries it again: the lock is held for a few
# store round trips (under a millisecond), and every try is one more of them.
_LOCK_POLL_SECONDS = 0.0005
# Waits between tries while the store is away, and between warnings about it.
_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)
_WARN_EVERY_SECONDS = 10.0


class WindowError(WasinnError):
    pass


class WindowLimit(WindowError):
    """A new window past the node's max-open-windows."""


class WindowUnavailable(WindowError):
    """The state store could not be reached: the write may or may not have been done."""


# A staged message as the store holds it: the lengths of its fields' JSON and of its
# payload, then both, the payload's bytes as they are (JSON and base64 of a 64 MiB
# payload held the GIL 0.2-0.3 s at a time, each way). A window's key holds the JSON of
# what it knows of itself after its length (`_META`), then its open chunk's messages; a
# full chunk's key holds its messages.
_ITEM = struct.Struct("<II")
# The user properties a window's messages hold together (16 messages' worth of
# connection.MAX_RECEIVED_USER_PROPERTIES): bytes alone let 80 messages of 65,536 each
# in (5.2 million; 30 s and 1.7 GB to decode and hand to the fold, past its deadline).
MAX_WINDOW_PROPERTIES = 1 << 16
_META = struct.Struct("<I")


def encode(data, staged: str) -> bytes:
    """A data-model value as the store holds it, with the token of its staging."""
    from .operator import Message, Snapshot
    if isinstance(data, Message):
        head, body = {"message": {"topic": data.topic, "content_type": data.content_type,
                                  "user_properties": data.user_properties, "timestamp": _ts(data.timestamp),
                                  "schema": data.schema}}, data.payload
    elif isinstance(data, Snapshot):
        head, body = {"snapshot": {"width": data.width, "height": data.height, "format": data.format,
                                   "timestamp": _ts(data.timestamp)}}, data.frame
    else:
        head, body = {"bytes": True}, data
    head["staged"] = staged
    text = json.dumps(head).encode()
    return b"".join((_ITEM.pack(len(text), len(body)), text, body))


def _items(value) -> list[tuple[dict, memoryview]]:
    """The staged messages of a chunk: (their fields, their payload)."""
    view, out, at = memoryview(value), [], 0
    while at < len(view):
        head, body = _ITEM.unpack_from(view, at)
        at += _ITEM.size
        out.append((json.loads(bytes(view[at:at + head])), view[at + head:at + head + body]))
        at += head + body
    return out


def _stub(staged: str, pieces: bytes, size: int) -> bytes:
    """What a chunk holds of a message staged in pieces (`_pieces`): its token, and where
    and how large its pieces are."""
    text = json.dumps({"staged": staged, "pieces": pieces.decode(), "size": size}).encode()
    return _ITEM.pack(len(text), 0) + text


def _pieces(prefix: bytes, size: int) -> list[tuple[bytes, int, int]]:
    """The keys of a message's pieces, and the span of its item each holds."""
    return [(prefix + b"/%d" % i, at, min(at + CHUNK_BYTES, size)) for i, at in enumerate(range(0, size, CHUNK_BYTES))]


def decode(head: dict, body: memoryview):
    from .operator import Message, Snapshot
    if "message" in head:
        m = head["message"]
        schema = m["schema"]
        return Message(bytes(body), m["topic"], m["content_type"], [tuple(p) for p in m["user_properties"]],
                       _from_ts(m["timestamp"]), tuple(schema) if isinstance(schema, list) else schema)
    if "snapshot" in head:
        s = head["snapshot"]
        return Snapshot(bytes(body), s["width"], s["height"], s["format"], _from_ts(s["timestamp"]))
    return bytes(body)


def _window(value: bytes) -> tuple[dict, memoryview]:
    """A window key's value: what the window knows of itself, and its open chunk."""
    (n,) = _META.unpack_from(value)
    return json.loads(value[_META.size:_META.size + n]), memoryview(value)[_META.size + n:]


def _window_error(e: Exception, doing: str) -> WindowError:
    """A state store's failure as the windows say it."""
    if isinstance(e, StateUnavailable):
        return WindowUnavailable(f"the state store is unavailable: {e}")
    return WindowError(f"the state store refused a window {doing}: {e}")


def _closed(meta: dict) -> int:
    """The messages of a window's closed chunks (a window staged before chunks closed by
    bytes too has no count of them: each of its chunks holds CHUNK_MESSAGES)."""
    return meta.get("closed", meta.get("chunks", 0) * CHUNK_MESSAGES)


def _staged(meta: dict) -> int:
    """The messages staged in a window: its closed chunks' and its open chunk's."""
    return _closed(meta) + meta["messages"]


def _window_value(meta: dict, *chunk) -> bytes:
    text = json.dumps(meta).encode()
    return b"".join((_META.pack(len(text)), text, *chunk))


def window_of(at: Timestamp) -> str:
    """A window's name: its time and counter, not the node that stamped it, so that the
    messages every worker and host stages for one time meet in one window."""
    return f"{at.wall:020d}.{at.counter:020d}"


def _ts(ts: Timestamp | None):
    return None if ts is None else [ts.secs, ts.nanos, ts.counter, ts.node_id]


def _from_ts(value) -> Timestamp | None:
    return None if value is None else Timestamp(*value)


class Windows:
    """The open windows of one graph (`prefix`: its group), staged by `owner` (a worker)."""

    def __init__(self, store, prefix: str, owner: str, *, lease_seconds: float = LEASE_SECONDS, log=None,
                 max_open: int = 1024, max_messages: int = 10_000, max_bytes: int = 64 << 20):
        """`log`: an EventLog for the warnings while the store is away; `max_open`: the
        windows one node may hold open (max-open-windows): the index of open windows is
        one value, written whole for each new window and read whole by `due`.
        `max_messages` and `max_bytes` (max-window-messages, max-window-bytes): what one
        window may stage, which its fold reads into the host and hands to one call."""
        self.store, self.prefix, self.owner, self.lease, self.log = store, prefix, owner, lease_seconds, log
        self.max_open, self.max_messages, self.max_bytes = max_open, max_messages, max_bytes
        self._lock_key = f"{prefix}/lock".encode()
        self._index_key = f"{prefix}/index".encode()

    def _key(self, node: str, at: Timestamp) -> bytes:
        return f"{self.prefix}/window/{node}/{window_of(at)}".encode()

    def _locked(self, work, token: bytes | None = None):
        """Runs `work(fencing)` holding the graph's lock (taken with the value `token`: a
        retry passes the same, and takes the lock again if its earlier try still holds it)."""
        token = token or f"{self.owner}/{time.monotonic_ns()}".encode()
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        try:
            while True:
                ok, fencing = self.store.set(self.owner, self._lock_key, token,
                                             condition="only-if-equal-or-does-not-exist", expires=self.lease)
                if ok:
                    break
                if time.monotonic() > deadline:
                    raise WindowError(f"the window lock {self._lock_key.decode()!r} stayed taken for "
                                      f"{_LOCK_WAIT_SECONDS:g} s")
                time.sleep(_LOCK_POLL_SECONDS)
            try:
                return work(fencing)
            finally:
                self.store.delete(self._lock_key, value=token)
        except (StateUnavailable, StateError) as e:
            raise _window_error(e, "write") from None

    def _retried(self, work, what: str):
        """`work(token)` until the store answers: one token for all the tries."""
        token = f"{self.owner}/{uuid.uuid4().hex}".encode()
        down, warned, tries = None, 0.0, 0
        while True:
            try:
                out = work(token)
            except WindowUnavailable as e:
                now = time.monotonic()
                if down is None:
                    down = now
                if self.log is not None and now - warned >= _WARN_EVERY_SECONDS:
                    warned = now
                    self.log.warning("state-store-unavailable", message=f"{e}; {what} waits, trying again",
                                     waited_s=round(now - down, 1))
                time.sleep(_RETRY_SECONDS[min(tries, len(_RETRY_SECONDS) - 1)])
                tries += 1
                continue
            if down is not None and self.log is not None:
                self.log.info("state-store-back", message=f"{what} went on", waited_s=round(time.monotonic() - down, 1))
            return out

    def _index(self) -> list[tuple[str, str]]:
        value, _ = self.store.get(self._index_key)
        return [tuple(x) for x in json.loads(value)] if value else []

    def stage(self, node: str, at: Timestamp, data) -> None:
        """Appends `data` to the window (node, at); returns once it is in the store (while
        the store is unavailable, it tries again)."""
        key, entry = self._key(node, at), [node, window_of(at)]
        item = stub = b""
        properties = len(getattr(data, "user_properties", ()))

        def attempt(token):
            nonlocal item, stub
            item = item or encode(data, token.decode())  # every try has the same token
            if len(item) > CHUNK_BYTES and not stub:
                stub = self._put_pieces(key, token, item)

            def work(fencing):
                value, _ = self.store.get(key)
                meta, chunk = _window(value) if value else ({"at": _ts(at), "messages": 0}, b"")
                chunks = meta.get("chunks", 0)
                recent = chunk if meta["messages"] or not chunks else self._chunk(key, chunks - 1)
                if any(head.get("staged") == token.decode() for head, _ in _items(recent)):
                    return  # an earlier try, whose answer was lost, staged it
                self._check_room(node, at, _staged(meta), meta.get("bytes", 0),
                                 len(item), meta.get("properties", 0) + properties)
                meta["messages"] += 1
                meta["bytes"] = meta.get("bytes", 0) + len(item)
                meta["properties"] = meta.get("properties", 0) + properties
                if stub:
                    meta["pieces"] = meta.get("pieces", 0) + 1
                if not value:  # a new window: in the index first, so that no window is left out of it
                    index = self._index()
                    if sum(n == node for n, _ in index) >= self.max_open and tuple(entry) not in index:
                        raise WindowLimit(f"{node!r} holds {self.max_open} open windows; a message for another "
                                          f"({window_of(at)}) would open one more (limit 'max-open-windows', "
                                          "--max-open-windows)")
                    if tuple(entry) not in index:
                        index.append(tuple(entry))
                        self.store.set(self.owner, self._index_key, json.dumps(index).encode(), fencing=fencing)
                staged = stub or item
                if meta["messages"] >= CHUNK_MESSAGES or len(chunk) + len(staged) >= CHUNK_BYTES:
                    # a full chunk moves to a key of its own
                    self.store.set(self.owner, self._chunk_key(key, chunks), b"".join((chunk, staged)),
                                   fencing=fencing)
                    meta["closed"] = _closed(meta) + meta["messages"]
                    meta["messages"], meta["chunks"] = 0, chunks + 1
                    self.store.set(self.owner, key, _window_value(meta), fencing=fencing)
                else:
                    self.store.set(self.owner, key, _window_value(meta, chunk, staged), fencing=fencing)
            self._locked(work, token)
        self._retried(attempt, f"a message for window {window_of(at)} of {node!r}")

    def _put_pieces(self, key: bytes, token: bytes, item: bytes) -> bytes:
        """Writes `item` in pieces (keys of their own, CHUNK_BYTES each, one write each)
        and returns the stub a chunk holds for it. A retry writes the same keys again."""
        prefix = key + b"/piece/" + token
        try:
            for piece, start, end in _pieces(prefix, len(item)):
                self.store.set(self.owner, piece, item[start:end])
        except (StateUnavailable, StateError) as e:
            raise _window_error(e, "write") from None
        return _stub(token.decode(), prefix, len(item))

    def _check_room(self, node: str, at: Timestamp, messages: int, held: int, size: int, properties: int) -> None:
        """Raises WindowLimit unless the window (node, at), holding `messages` staged
        messages of `held` bytes, may stage one more of `size` bytes, its messages then
        holding `properties` user properties."""
        if properties > MAX_WINDOW_PROPERTIES:
            raise WindowLimit(f"{node!r} window {window_of(at)}: this message would take its messages' user "
                              f"properties to {properties}; a window holds at most {MAX_WINDOW_PROPERTIES}")
        if messages >= self.max_messages:
            raise WindowLimit(f"{node!r} window {window_of(at)} holds {messages} messages; the limit is "
                              f"{self.max_messages} (limit 'max-window-messages', --max-window-messages)")
        if held + size > self.max_bytes:
            raise WindowLimit(f"{node!r} window {window_of(at)} holds {held} bytes; this message ({size} bytes "
                              f"staged) would take it past the limit of {self.max_bytes} (limit 'max-window-bytes', "
                              "--max-window-bytes)")

    def due(self, now: Timestamp) -> Iterator[tuple[str, Timestamp, list, str, int]]:
        """The windows whose time has come and whose emit lease this worker took:
        (node, timestamp, messages, window id, upto: the messages emitted once these
        are). Call `emitted(node, at, upto)` once its result is published. One window is
        read at a time, as the caller asks for the next: the host holds the messages of
        one window, not of every window that came due together."""
        try:
            yield from self._due(now)
        except (StateUnavailable, StateError) as e:
            raise _window_error(e, "read") from None

    def _due(self, now: Timestamp) -> Iterator[tuple[str, Timestamp, list, str, int]]:
        for node, version in self._index():
            if int(version.partition(".")[0]) > now.wall:
                continue  # open (its name is its time): not read, however many messages it holds
            lease = f"{self.prefix}/emit/{node}/{version}".encode()
            ok, _ = self.store.set(self.owner, lease, self.owner.encode(), condition="only-if-does-not-exist",
                                   expires=self.lease)
            if ok:  # read under the lease: what its last holder emitted is recorded before it lets go
                key = self._key_of(node, version)
                value, _ = self.store.get(key)
                meta, chunk = _window(value) if value else (None, b"")
                done = meta.get("emitted", 0) if meta else 0
                todo = self._messages(key, meta, chunk)[done:] if meta else []
                if not todo:  # emitted meanwhile (its index entry read before it went)
                    if meta:
                        self.emitted(node, _from_ts(meta["at"]), done)
                    self.store.delete(lease)
                    continue
                at = _from_ts(meta["at"])
                ident = f"window:{node}:{version}" + (f"+{done}" if done else "")
                yield node, at, [decode(head, body) for head, body in todo], ident, done + len(todo)

    def _key_of(self, node: str, version: str) -> bytes:
        return f"{self.prefix}/window/{node}/{version}".encode()

    @staticmethod
    def _chunk_key(key: bytes, n: int) -> bytes:
        return key + f"/chunk/{n}".encode()

    def _chunk(self, key: bytes, n: int) -> bytes:
        value, _ = self.store.get(self._chunk_key(key, n))
        return value or b""

    def _messages(self, key: bytes, meta: dict, chunk) -> list[tuple[dict, memoryview]]:
        """Every message of the window, in the order they were staged (a stub's pieces
        read back into its message)."""
        return [self._whole(head) if "pieces" in head else (head, body) for head, body in self._stubs(key, meta, chunk)]

    def _stubs(self, key: bytes, meta: dict, chunk) -> list[tuple[dict, memoryview]]:
        """The window's messages as its chunks hold them: a message staged in pieces as its stub."""
        return [m for n in range(meta.get("chunks", 0)) for m in _items(self._chunk(key, n))] + _items(chunk)

    def _whole(self, stub: dict) -> tuple[dict, memoryview]:
        parts = []
        for piece, start, end in _pieces(stub["pieces"].encode(), stub["size"]):
            value, _ = self.store.get(piece)
            if value is None or len(value) != end - start:
                raise StateError(f"a piece of a staged message is missing: {piece.decode(errors='replace')}")
            parts.append(value)
        (item,) = _items(b"".join(parts))
        return item

    def _drop_pieces(self, key: bytes, meta: dict, chunk, fencing) -> None:
        """Deletes the pieces of the window's messages staged in pieces (once it is emitted)."""
        if not meta.get("pieces"):
            return
        for head, _ in self._stubs(key, meta, chunk):
            if "pieces" in head:
                for piece, _, _ in _pieces(head["pieces"].encode(), head["size"]):
                    self.store.delete(piece, fencing=fencing)

    def emitted(self, node: str, at: Timestamp, upto: int) -> None:
        """The window's result (of its messages up to `upto`) is with the broker: the
        window is gone, or, when messages came late, left for them. Repeating it changes
        nothing."""
        entry, key = (node, window_of(at)), self._key(node, at)

        def work(fencing):
            value, _ = self.store.get(key)
            meta, chunk = _window(value) if value else ({"messages": 0}, b"")
            done = max(meta.get("emitted", 0), upto)
            chunks = meta.get("chunks", 0)
            if done < _staged(meta):
                meta["emitted"] = done
                self.store.set(self.owner, key, _window_value(meta, chunk), fencing=fencing)
                self.store.delete(f"{self.prefix}/emit/{node}/{window_of(at)}".encode())
                return
            self._drop_pieces(key, meta, chunk, fencing)
            self.store.delete(key, fencing=fencing)
            for n in range(chunks):  # after the window: a chunk left behind is garbage, not a message
                self.store.delete(self._chunk_key(key, n), fencing=fencing)
            index = [e for e in self._index() if e != entry]
            self.store.set(self.owner, self._index_key, json.dumps(index).encode(), fencing=fencing)
        self._locked(work)
