"""One worker of `wasinn serve`: an MQTT session and the engine (engine.py) that answers its
messages, one at a time (the next ones prepared meanwhile, on a thread of their own): a
wasinn pipeline's stages, or an Azure data-flow graph's operators.

The supervisor (`wasinn serve`) runs each worker as `python -m wasinn.pipeline.worker`.

Delivery: the worker subscribes at QoS 1 to `$share/GROUP/SOURCE-TOPIC` (each source topic) with a
persistent session (clean_start false, a session expiry), and acknowledges a message
only after the broker has acknowledged its result (or its dead-letter record). A
worker that dies mid-message has acknowledged nothing for it, so the broker keeps the
message in the worker's session and sends it again when the worker's successor
connects under the same client id. Results may then come twice: both carry the
message's id. The main thread does not wait for the broker's acknowledgement of a
result: it starts on the next message, and the network thread acknowledges the
source message when the broker's comes (in the order the messages arrived, as MQTT
wants; waiting cost ~1 ms of every message's turn).

Across a lost connection (a broker restart, a network outage) the worker reconnects
(connection.py) and resumes its session; the broker sends again what it had sent and
not seen acknowledged (mosquitto does not always mark these as duplicates after its own
restart). The last messages answered before a connection was lost are remembered (id,
topic and payload): one that comes again is acknowledged without running it again, so
a broker restart makes a message run twice only if the worker process itself is gone.

Each worker keeps a retained presence on `wasinn/GROUP/workers/CLIENT-ID`: `up` on
every connect, `stopped` on a clean stop, and `lost` as its will, which the broker
publishes when the connection is lost without a DISCONNECT (`keepalive` seconds later,
unless the worker is back by then). The supervisors of the other machines rescue a
worker that stays lost (supervisor.py).

A retiring worker (`--retire`) resumes the session of a worker slot that is no longer
wanted, unsubscribes, finishes every message the broker had queued for it, and ends
the session, so that the broker stops handing that slot a share of the messages.

Message ids: the MQTT 5 user property `id`, else the correlation data, else
`sha256:` and the first 16 hex digits of the payload's sha256.
"""
from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import queue
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..errors import WasinnError
from ..limits import Limits
from ..runtime import Host
from .connection import MAX_RECEIVED_USER_PROPERTIES, PROTOCOL_MAX_PACKET, Link, PublishProperties
from .engine import Publication, Runner, open_runner
from .graph import StageFailure
from .jsonlog import EventLog, capture_output
from .metrics import WorkerMetrics
from .mqtt_text import filters_pattern, string_problem
from .services.invoker import HOST_TOPICS

# Exit status for "this pipeline cannot start" (sysexits' EX_CONFIG): the supervisor
# does not restart a worker that exits with it.
EXIT_CONFIG = 78
# Exit status for "a guest's call outlived its deadline in native code nothing
# interrupts" (sysexits' EX_TEMPFAIL): the message went to dead letters, the supervisor
# starts another worker.
EXIT_OVERDUE = 75
# A retiring worker leaves once the broker has sent it nothing for this long: the
# broker sends a session's queued messages as soon as the previous ones are acknowledged.
RETIRE_IDLE_SECONDS = 2.0
# Answered messages whose acknowledgement a lost connection may have swallowed: only the
# last few can be, since the broker has at most mqtt.receiveMaximum unacknowledged.
_ANSWERED_REMEMBERED = 16
# QoS 0 messages a worker holds waiting, at most (and at most 2 x max-payload-bytes of
# them): no Receive Maximum holds QoS 0 back, so a publisher faster than the worker had it
# hold every one (50,000 of 1 KB: +454 MiB, and growing). Past either bound new ones are
# dropped and counted: QoS 0 is at most once. (QoS 1 is held back by the broker, though
# mosquitto 2.0.11 lets one more in for every acknowledgement: see `_on_message`.)
QOS0_BACKLOG = 1000
# The least time between two lines saying that QoS 0 messages were dropped
_DROPPED_LINE_SECONDS = 10.0
# Messages prepared ahead of the one in the stages, on a thread of their own: Pillow
# decodes with the GIL released, so a photo's decoding (2.6-5.7 ms for the sample
# photos, a fifth to a third of its turn) runs on the core that one onnxruntime thread
# leaves free. Two bound what is held decoded to two images.
_DECODED_AHEAD = 2


# A message whose runner has nothing to prepare (`prepares_ahead` false) is prepared on
# the main thread up to this size: hashing it for `answered` (sha256: ~0.7 us a KiB here)
# costs less than the decoder thread's two wake-ups; a larger one is hashed there, beside
# the message before it.
_PREPARED_INLINE_BYTES = 64 << 10
# How long an overdue message's dead letter may take to reach the broker before the
# worker ends without it (the message is then sent again, to the next worker).
_OVERDUE_PUBLISH_SECONDS = 5.0


# Bytes base64-encoded at a time for a dead letter's copy of its message: ~1 ms each, so
# that the other threads (the network thread, a deadline's watchdog) get the GIL between.
_BASE64_STEP = 3 << 18


# How long a worker waits for the broker to take one window's results before it folds the
# next window (`_emit_due`); past it (the connection lost), it folds on.
WINDOW_PUBLISH_SECONDS = 10.0


def in_base64(payload: bytes) -> bytes:
    """`payload` in base64 (ASCII bytes): a network message of up to max-payload-bytes, in
    steps (64 MiB in one call held the GIL 0.1 s)."""
    view = memoryview(payload)
    return b"".join(base64.b64encode(view[i:i + _BASE64_STEP]) for i in range(0, len(view), _BASE64_STEP))


def envelope(body: dict) -> bytes:
    """A JSON envelope's bytes. A dead letter's `payload_base64` (bytes: `in_base64`) is
    put in as it is, JSON needing no escape in it: json.dumps searched all of a 64 MiB
    message's 85 MiB of base64 in one call, holding the GIL 0.3 s."""
    encoded = body.get("payload_base64")
    if not isinstance(encoded, bytes):
        return json.dumps(body).encode()
    rest = json.dumps({k: v for k, v in body.items() if k != "payload_base64"}).encode()
    return b"".join((rest[:-1], b", " if len(rest) > 2 else b"", b'"payload_base64": "', encoded, b'"}'))


# What a worker takes beside a message's payload (its topic, user properties and the
# rest of its header): the broker sends it no larger packet (MQTT 5 Maximum Packet Size).
HEADER_ROOM = 1 << 20


def max_packet(max_payload: int) -> int:
    """The Maximum Packet Size a worker gives the broker: a message over it is discarded
    by the broker (MQTT 5, 3.1.2.25), never held by the worker (mosquitto sent one of
    150 MB: ~1 GB of the worker's memory)."""
    return min(max_payload + HEADER_ROOM, PROTOCOL_MAX_PACKET)


def presence_topic(group: str, client_id: str) -> str:
    return f"{HOST_TOPICS}/{group}/workers/{client_id}"


def presence(client_id: str, state: str) -> bytes:
    return json.dumps({"worker": client_id, "state": state}).encode()


def presence_state(payload: bytes) -> str | None:
    """The state a presence message says (`presence`), or None for one that says none:
    anyone the broker lets publish there can send anything (JSON nested past Python's
    stack raised out of the supervisor's network callback, which ended its loop)."""
    try:
        state = json.loads(payload)["state"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return state if isinstance(state, str) else None


def message_id(msg: mqtt.MQTTMessage) -> str:
    """What a message's results and dead letters say they answer (their user property
    `id`): its own `id` user property, its correlation data as text, or its payload's
    digest. Either of the first two goes back to the broker, so it must be MQTT text of
    at most MAX_ID bytes, or its digest stands for it (correlation data with a line break
    or a NUL had the broker drop the connection at every resend of the result; 30,000
    bytes of it broke the worker's packing of the result)."""
    props = msg.properties
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "id":
            return _as_id(value, value.encode())
    correlation = getattr(props, "CorrelationData", None)
    if correlation:
        return _as_id(correlation.decode("utf-8", "backslashreplace"), correlation)
    return _digest(msg.payload)


# The longest `id` a result takes from its message as it is (`message_id`).
MAX_ID = 1024


def _as_id(text: str, data: bytes) -> str:
    return text if len(text) <= MAX_ID and string_problem(text) is None else _digest(data)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class _Prepared:
    """A message prepared ahead of its turn (`Worker._prepare`)."""
    ident: str
    key: bytes  # what `answered` remembers it by
    taken: float  # perf_counter when the worker took it from its inbox
    value: object  # what the runner made of it (an image, ...)
    failure: Exception | None  # why there is no value
    seconds: float  # preparing it


class _Ready:
    """A message prepared on the main thread (`Worker._inline`): handing it to the decoder
    thread and back costs two thread wake-ups (~50-170 us on 2 cores), a fifth of a JSON
    map's turn."""

    def __init__(self, prepared: _Prepared):
        self.prepared = prepared

    def result(self) -> _Prepared:
        return self.prepared


@dataclasses.dataclass(eq=False)
class _Held:
    """A message from its start until the broker has acknowledged its result and it is
    acknowledged in turn (or its connection is gone)."""
    msg: mqtt.MQTTMessage
    session: int
    key: bytes  # what `answered` remembers it by
    received: float
    ident: str
    outcome: list[Publication] | None = None  # published; None: answered before
    published: float = 0.0
    settled: bool = False  # its results are with the broker (or it needs none)
    pending: int = 0  # results the broker has not acknowledged yet
    dropped: bool = False  # its connection was lost before it was acknowledged


class Worker:
    def __init__(self, pipeline, runner: Runner, client_id: str, log: EventLog,
                 metrics: WorkerMetrics, *, retire: bool = False, invoker=None, limits: Limits | None = None):
        """`pipeline`: what is served, a `Pipeline` or a `Dataflow` (its `mqtt` settings);
        `runner` answers the messages; `invoker` (services.CommandInvoker.awaiting), the
        runner's operators' commands, goes over this worker's connection; `limits`: the
        host's (max-payload-bytes bounds what the broker sends it)."""
        self.pipeline, self.runner, self.client_id, self.log, self.metrics = pipeline, runner, client_id, log, metrics
        self.max_payload = (limits or Limits()).max_payload_bytes
        self.parent: int | None = None  # the supervisor's pid: gone (this process reparented), the worker stops
        self.retire = retire
        self._running: tuple[str, mqtt.MQTTMessage] | None = None  # the message being answered (`overdue`)
        self.last_activity = time.monotonic()
        # (session number, message): a message from an earlier connection is not acknowledged
        # on this one; the broker sends it again in the resumed session. The number changes
        # when a connection is lost and when one is made. (SimpleQueue, in C: queue.Queue's
        # put and get run in Python under a Condition whose wait makes a lock each time.)
        self.inbox: queue.SimpleQueue[tuple[int, mqtt.MQTTMessage]] = queue.SimpleQueue()
        # QoS 0 messages in the inbox, and their payload bytes (QOS0_BACKLOG); and those
        # dropped since the last line said so, and when it did
        self._qos0 = [0, 0]
        self._qos0_lock = threading.Lock()
        self._dropped, self._dropped_said = 0, -_DROPPED_LINE_SECONDS
        self._over_receive_maximum_said = False
        self.session = 0
        self.stopping = threading.Event()
        self.answered: collections.OrderedDict[bytes, None] = collections.OrderedDict()  # this connection's last
        self.unconfirmed: set[bytes] = set()  # answered before the last lost connection
        self._answers = threading.Condition()
        self._held: collections.deque[_Held] = collections.deque()  # in arrival order, not yet acknowledged
        m = pipeline.mqtt
        will = None
        if not retire:  # a retiring worker is itself a rescue: nothing to rescue it from
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = m.keepalive  # a worker back within it (restarted) sends no will
            will = (presence_topic(m.group, client_id), presence(client_id, "lost"), props)
        self.link = Link(m, client_id, log, on_up=self._on_up, on_down=self._on_down, manual_ack=True,
                         take_back=not retire, will=will)
        # results and dead letters not yet acknowledged: two messages' worth, at most
        self.link.max_unacked_bytes = 2 * self.max_payload
        self.connected = self.link.connected
        self.client = self.link.client
        self.client.on_message, self.client.on_subscribe = self._on_message, self._on_subscribe
        self.invoker = invoker
        if invoker is not None:
            invoker.attach(self.client, tuple(runner.topics), self.link.too_large)
        self._sources = filters_pattern(runner.topics)
        self._subscription = None  # the message id of the source topics' subscription

    # --- network thread -------------------------------------------------------------
    def _on_up(self, client, session_present: bool) -> None:
        with self._answers:
            self.session += 1
        self.last_activity = time.monotonic()
        if self.invoker is not None and not session_present:
            self.invoker.session_lost()
        shared = [f"$share/{self.pipeline.mqtt.group}/{topic}" for topic in self.runner.topics]
        if self.retire:
            client.unsubscribe(shared)
            self.log.info("retiring", session_present=session_present)
        else:
            _, self._subscription = client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in shared])
            self.link.publish_retained(presence_topic(self.pipeline.mqtt.group, self.client_id),
                                       presence(self.client_id, "up"))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._subscription:  # a command invoker's response topic
            return
        if any(rc.is_failure for rc in reason_codes):
            self.log.error("subscribe-refused", reasons=[str(rc) for rc in reason_codes])
            return
        self.metrics.ready.set(1)
        topics = self.runner.topics
        self.log.info("subscribed", topic=topics[0] if len(topics) == 1 else topics, group=self.pipeline.mqtt.group)

    def _on_down(self, reason_code) -> None:
        self.metrics.ready.set(0)
        with self._answers:
            self.session += 1  # what came on the lost connection is acknowledged on none
            self.unconfirmed = set(self.answered) | set(list(self.unconfirmed)[:_ANSWERED_REMEMBERED])
            self.answered.clear()
            finished = self._acknowledge()
        self._report(finished)
        if not self.stopping.is_set():
            self.log.warning("disconnected", reason=str(reason_code), held=self.inbox.qsize())

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        if self.stopping.is_set():
            return  # left unacknowledged: the broker sends it again to this session
        if not self._sources.fullmatch(msg.topic):
            # a command's response that came after its invoker went (the session keeps the
            # response topic's subscription across the worker's restarts): no input of the graph
            client.ack(msg.mid, msg.qos)
            return
        if msg.qos == 0 and not self._hold_qos0(len(msg.payload)):
            return
        self.metrics.queued.inc()
        self.last_activity = time.monotonic()
        self.inbox.put((self.session, msg))
        if msg.qos and not self._over_receive_maximum_said and \
                self.inbox.qsize() - self._qos0[0] > self.pipeline.mqtt.receive_maximum + _DECODED_AHEAD:
            # MQTT 5 forbids it (3.3.4), and mosquitto 2.0.11 does it: each acknowledgement
            # lets two more in. What the worker holds is then bounded by the broker's queue.
            self._over_receive_maximum_said = True
            self.log.warning("over-receive-maximum", held=self.inbox.qsize(),
                             receive_maximum=self.pipeline.mqtt.receive_maximum,
                             detail="the broker sends more unacknowledged messages than mqtt.receiveMaximum "
                                    "allows (mosquitto 2.0.11 does under load); the worker holds them until it "
                                    "gets to them: bound them with the broker's own queue limit "
                                    "(mosquitto: max_queued_messages)")

    def _hold_qos0(self, size: int) -> bool:
        """Whether a QoS 0 message of `size` payload bytes fits the backlog (QOS0_BACKLOG);
        one that does not is counted and dropped, said in a line every so often."""
        with self._qos0_lock:
            count, held = self._qos0
            if count < QOS0_BACKLOG and held + size <= 2 * self.max_payload:
                self._qos0[0], self._qos0[1] = count + 1, held + size
                return True
            self._dropped += 1
            now = time.monotonic()
            if now - self._dropped_said < _DROPPED_LINE_SECONDS:
                dropped = 0
            else:
                dropped, self._dropped, self._dropped_said = self._dropped, 0, now
        self.metrics.dropped.inc()
        if dropped:
            self.log.warning("qos0-dropped", dropped=dropped, held=count, held_bytes=held,
                             detail=f"QoS 0 messages come faster than the worker takes them: past {QOS0_BACKLOG} "
                                    "waiting, or 2 x max-payload-bytes of them, new ones are dropped (QoS 0 is at "
                                    "most once); publish at QoS 1 to have the broker keep them, or add workers")
        return False

    def _taken(self, msg: mqtt.MQTTMessage) -> None:
        if msg.qos == 0:
            with self._qos0_lock:
                self._qos0[0] -= 1
                self._qos0[1] -= len(msg.payload)

    # --- main thread ----------------------------------------------------------------
    def run(self) -> int:
        m = self.pipeline.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = m.session_expiry
        props.ReceiveMaximum = m.receive_maximum
        props.MaximumPacketSize = max_packet(self.max_payload)
        self.link.start(clean_start=False, properties=props)
        decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wasinn-decode")
        ahead: collections.deque[tuple[int, mqtt.MQTTMessage, concurrent.futures.Future]] = collections.deque()
        try:
            while not self.link.ended.is_set():
                while len(ahead) < _DECODED_AHEAD and not (ahead and self.inbox.empty()):
                    try:
                        session, msg = self.inbox.get_nowait() if ahead else self.inbox.get(timeout=0.2)
                    except queue.Empty:
                        break
                    self._taken(msg)
                    taken = time.perf_counter()
                    ahead.append((session, msg, _Ready(self._prepare(msg, taken)) if self._inline(msg)
                                  else decoder.submit(self._prepare, msg, taken)))
                self._emit_due()
                if self.parent is not None and os.getppid() != self.parent and not self.stopping.is_set():
                    # its supervisor was killed (SIGKILL: no time to stop its workers), and nothing
                    # else would: a worker outlived it by 15 minutes, reconnecting to a broker gone too
                    self.log.warning("supervisor-gone", parent=self.parent)
                    self.stop()
                if not ahead:
                    if self.stopping.is_set() or self._retired():
                        break
                    continue
                session, msg, prepared = ahead.popleft()
                self.handle(session, msg, prepared.result())
                self.last_activity = time.monotonic()
        finally:
            decoder.shutdown(cancel_futures=True)
            # results still on their way: their messages are acknowledged when they arrive, while
            # connected (a worker stopped while its broker was gone waited for ever; its
            # messages, unacknowledged, go again to the session's next worker)
            with self._answers:
                while any(h.outcome and not h.settled for h in self._held) and self.connected.is_set():
                    self._answers.wait(0.5)
            ends = None
            if self.retire and not self.stopping.is_set() and not self.link.taken_over:
                ends = Properties(PacketTypes.DISCONNECT)
                ends.SessionExpiryInterval = 0  # the broker forgets the slot and its share
            elif not self.retire and self.connected.is_set():  # not lost: nobody rescues it
                try:
                    self.link.publish_retained(presence_topic(m.group, self.client_id),
                                               presence(self.client_id, "stopped")).wait_for_publish(timeout=2)
                except (RuntimeError, ValueError):
                    pass  # the connection went meanwhile: its will says lost, as it is
            self.link.close(properties=ends)
            self.runner.close()
        if self.link.fatal:
            return EXIT_CONFIG
        if self.link.taken_over:
            self.log.info("taken-over", message="the session's own worker is back; it goes on from here")
        self.log.info("stopped")
        return 0

    def _retired(self) -> bool:
        return (self.retire and self.connected.is_set() and self.inbox.empty() and not self._held
                and time.monotonic() - self.last_activity > RETIRE_IDLE_SECONDS)

    def stop(self) -> None:
        """Takes no new message; the ones already received are finished."""
        if not self.stopping.is_set():
            self.log.info("stopping", queued=self.inbox.qsize())
        self.stopping.set()

    def _emit_due(self) -> None:
        """What the runner holds back until a time (windows that closed) is published now;
        the messages it came from were acknowledged when they were staged. A window's
        publications go, and the broker takes them (or WINDOW_PUBLISH_SECONDS pass),
        before the next window is folded: the worker holds one window's results."""
        def acknowledged(then, left: list[int], taken: threading.Event) -> None:
            if then is not None:
                then()
            left[0] -= 1  # on the network thread, one callback at a time
            if not left[0]:
                taken.set()
        for pubs in self.runner.due():
            fitted = [f for pub in pubs if (f := self._fitting(pub, None)) is not None]
            left, taken = [len(fitted)], threading.Event()  # this window's, whenever its acknowledgements come
            for pub, props in fitted:
                self.link.publish(pub.topic, pub.payload, props,
                                  functools.partial(acknowledged, pub.on_published, left, taken))
                if pub.error is None:
                    self.metrics.published.inc()
                else:
                    self.metrics.failed(pub.error["stage"], pub.error["kind"])
                    self.log.warning("dead-letter", id=pub.id, **pub.error)
            if fitted:
                taken.wait(WINDOW_PUBLISH_SECONDS)

    def _inline(self, msg: mqtt.MQTTMessage) -> bool:
        """Whether preparing `msg` costs less than handing it to the decoder thread and back."""
        return not self.runner.prepares_ahead and len(msg.payload) <= _PREPARED_INLINE_BYTES

    def _prepare(self, msg: mqtt.MQTTMessage, taken: float) -> _Prepared:
        """On the decoder thread (or inline: `_inline`): what a message needs before its
        stages, none of which has side effects (whether it runs at all is `handle`'s to say)."""
        start = time.perf_counter()
        ident = message_id(msg)
        digest = hashlib.sha256(ident.encode() + b"\0" + msg.topic.encode() + b"\0")
        digest.update(msg.payload)  # (not joined to the rest: a copy of a message of up to 64 MiB)
        key = digest.digest()
        try:
            if dropped := getattr(msg.properties, "dropped_user_properties", 0):
                raise StageFailure("source", "invalid-input", f"the message has "
                                   f"{MAX_RECEIVED_USER_PROPERTIES + dropped} user properties; a worker takes "
                                   f"at most {MAX_RECEIVED_USER_PROPERTIES}")
            value, failure = self.runner.prepare(msg), None
        except Exception as e:  # StageFailure, or a host-side bug: `handle` reports it
            value, failure = None, e
        return _Prepared(ident, key, taken, value, failure, time.perf_counter() - start)

    def handle(self, session: int, msg: mqtt.MQTTMessage, prepared: _Prepared) -> None:
        """Runs one message and publishes its result (or dead letter); the message is
        acknowledged later, by `_settle`, once the broker has the result."""
        if session != self.session:
            self.metrics.queued.dec()
            return
        ident, key, received = prepared.ident, prepared.key, prepared.taken
        held = _Held(msg, session, key, received, ident)
        with self._answers:
            again = key in self.unconfirmed
            self.unconfirmed.discard(key)
            self._held.append(held)
        if again:  # its result is with the broker already
            self.log.info("redelivered", id=ident, mid=msg.mid, message="answered before the connection was lost; "
                          "acknowledged without running it again")
            self._settle(held)
            return
        self.metrics.received.inc()
        self.log.debug("received", id=ident, mid=msg.mid, dup=bool(msg.dup), bytes=len(msg.payload))
        self._running = (ident, msg)
        try:
            if prepared.failure is not None:
                raise prepared.failure
            pubs, seconds = self.runner.answer(ident, msg, prepared.value, prepared.seconds, self.client_id)
        except StageFailure as f:
            seconds = {}
            pubs = [self._dead_letter(ident, msg, f.stage, f.kind, f.message)]
        except Exception as e:  # a host-side bug must not stop the service: dead-letter the message
            seconds = {}
            pubs = [self._dead_letter(ident, msg, "host", "host-error", f"{type(e).__name__}: {e}")]
        finally:
            self._running = None
        for stage, s in seconds.items():
            self.metrics.stage(stage).observe(s)
        total = round((time.perf_counter() - received) * 1000, 3)
        for pub in pubs:
            if pub.body is not None:  # a JSON envelope: its timing ends here
                pub.body["timing_ms"] = {**pub.body.get("timing_ms", {}), "total": total}
                pub.payload = envelope(pub.body)
            if pub.id is None:
                pub.id = ident
        if pubs:
            props = getattr(msg.properties, "CorrelationData", None)
            for pub in pubs:
                pub.correlation = props
        sent = [fitted for pub in pubs if (fitted := self._fitting(pub, msg)) is not None]
        held.outcome, held.published, held.pending = [pub for pub, _ in sent], time.perf_counter(), len(sent)
        if not sent:  # filtered out, or staged in a window: nothing to wait for
            self._settle(held)
        for pub, props in sent:
            self.link.publish(pub.topic, pub.payload, props, lambda: self._settle(held, 1))

    def _fitting(self, pub: Publication, msg: mqtt.MQTTMessage | None) -> tuple[Publication, PublishProperties] | None:
        """`pub` and its properties as the broker takes them (`msg`: the message it answers;
        None for a window's). A result over the broker's Maximum Packet Size becomes a dead
        letter; a dead letter over it goes without the message's payload (its length and
        digest stay); where not even that fits, nothing goes and the log says so."""
        props = self._properties(pub)
        why = self.link.too_large(pub.topic, pub.payload, props)
        if why is None:
            return pub, props
        if pub.error is None:
            message = f"the result for {pub.topic}: {why}"
            if msg is not None:
                dead = self._dead_letter(pub.id, msg, "sink", "packet-too-large", message)
            else:
                error = {"stage": "sink", "kind": "packet-too-large", "message": message}
                dead = Publication(self.pipeline.mqtt.dead_letter_topic, body={"id": pub.id, "error": error,
                                                                               "worker": self.client_id}, error=error)
            dead.id, dead.correlation, dead.on_published = pub.id, pub.correlation, pub.on_published
            dead.payload = envelope(dead.body)
            return self._fitting(dead, msg)
        if pub.body is not None and pub.body.get("payload_base64") and msg is not None:
            pub.body = dict(pub.body, payload_base64=None, payload_sha256=hashlib.sha256(msg.payload).hexdigest(),
                            payload_omitted=f"the dead letter with the message's payload: {why}")
            pub.payload = envelope(pub.body)
            return self._fitting(pub, msg)
        self.log.error("dead-letter-dropped", id=pub.id, error=pub.error, message=f"not even its dead letter: {why}")
        if pub.on_published is not None:  # a window's: done with, as far as it can be
            pub.on_published()
        return None

    def overdue(self, what: str) -> None:
        """From the deadline watchdog (Host's `overdue`): a guest's call outlived its
        deadline in native code nothing interrupts, and holds this worker and the
        messages behind it. The message it was answering goes to dead letters and is
        acknowledged (it is not run again), then the worker ends; its supervisor starts
        another, which resumes the session."""
        running = self._running
        self.log.error("overdue", message=what, id=running[0] if running else None)
        if running is not None and self.connected.is_set():
            ident, msg = running
            pub = self._dead_letter(ident, msg, "graph", "overdue", f"{what}; the worker restarts")
            pub.id, pub.payload = ident, envelope(pub.body)
            published = threading.Event()
            fitted = self._fitting(pub, msg)
            if fitted is None:
                published.set()
            else:
                self.link.publish(fitted[0].topic, fitted[0].payload, fitted[1], published.set, wait=False)
            if published.wait(_OVERDUE_PUBLISH_SECONDS):
                self.client.ack(msg.mid, msg.qos)
                self.log.warning("dead-letter", id=ident, **pub.error)
            self.link.close(timeout=_OVERDUE_PUBLISH_SECONDS)  # a clean DISCONNECT: the acknowledgement goes first
        os._exit(EXIT_OVERDUE)

    def _settle(self, held: _Held, results: int = 0) -> None:
        """`held` needs nothing more from the broker once its last result is acknowledged:
        then acknowledge what can be, in order."""
        with self._answers:
            held.pending -= results
            if held.pending > 0:
                return
            held.settled = True
            if held.dropped:  # its connection went meanwhile: the broker sends it again on this one
                self.unconfirmed.add(held.key)
                finished = [held]
            else:
                finished = self._acknowledge()
        self._report(finished)

    def _acknowledge(self) -> list[_Held]:
        """Holding `_answers`: acknowledges the settled messages at the head of the line
        (MQTT wants acknowledgements in the order the messages came); those of a lost
        connection leave it unacknowledged. Returns those that are done."""
        finished = []
        while self._held:
            held = self._held[0]
            if held.session != self.session:
                self._held.popleft()
                held.dropped = True
                if held.settled:
                    self.unconfirmed.add(held.key)
                    finished.append(held)
                continue
            if not held.settled:
                break
            self._held.popleft()
            self.answered[held.key] = None
            if len(self.answered) > _ANSWERED_REMEMBERED:
                self.answered.popitem(last=False)
            self.client.ack(held.msg.mid, held.msg.qos)
            finished.append(held)
        self._answers.notify_all()
        return finished

    def _report(self, finished: list[_Held]) -> None:
        for held in finished:
            self.metrics.queued.dec()
            if held.outcome is None:
                continue
            done = time.perf_counter()
            self.metrics.message_seconds.observe(done - held.received)
            if not held.outcome:
                self.log.debug("done", id=held.ident, mid=held.msg.mid, ms=round((done - held.received) * 1000, 3),
                               published=0)
            for pub in held.outcome:
                if pub.error is None:
                    self.metrics.published.inc()
                    self.log.debug("done", id=held.ident, mid=held.msg.mid, ms=round((done - held.received) * 1000, 3),
                                   publish_ms=round((done - held.published) * 1000, 3))
                else:
                    self.metrics.failed(pub.error["stage"], pub.error["kind"])
                    self.log.warning("dead-letter", id=held.ident, **pub.error)

    def _dead_letter(self, ident: str, msg: mqtt.MQTTMessage, stage: str, kind: str, message: str) -> Publication:
        error = {"stage": stage, "kind": kind, "message": message}
        body = {"id": ident, "error": error, "worker": self.client_id, "source_topic": msg.topic,
                "payload_bytes": len(msg.payload)}
        if len(msg.payload) <= self.max_payload:
            body["payload_base64"] = in_base64(msg.payload)
        else:  # its copy would be a third larger still: 150 MB became 200 MB of base64
            body.update(payload_sha256=hashlib.sha256(msg.payload).hexdigest(),
                        payload_omitted=f"the message is over max-payload-bytes ({self.max_payload})")
        return Publication(self.pipeline.mqtt.dead_letter_topic, body=body, error=error)

    @staticmethod
    def _properties(pub: Publication) -> PublishProperties:
        user = pub.user_properties
        if pub.id is not None and not any(k == "id" for k, _ in user):
            user = [("id", pub.id), *user]
        return PublishProperties(pub.content_type, pub.correlation, user)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wasinn.pipeline.worker",
                                 description="One worker of `wasinn serve` (started by its supervisor).")
    ap.add_argument("--pipeline", required=True, help="a pipeline file, or a resolved data-flow graph (.json)")
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--broker", help="HOST:PORT instead of the pipeline file's")
    ap.add_argument("--tls-ca", help="mqtt.tls.ca instead of the pipeline file's")
    ap.add_argument("--username", help="mqtt.username instead of the pipeline file's")
    ap.add_argument("--password-file", help="mqtt.passwordFile instead of the pipeline file's")
    ap.add_argument("--ort-threads", type=int, default=1)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--limits", default="{}", help="the limits that differ from the defaults, as JSON")
    ap.add_argument("--retire", action="store_true",
                    help="finish what the broker holds for this client id, then end its session")
    args = ap.parse_args(argv)
    log = capture_output(EventLog(level=args.log_level, worker=args.client_id))
    try:
        from ..backends import onnxruntime as onnxruntime_backend  # (not in the supervisor, which imports this)
        # the stages' sessions run in turn: on one pool, as one session's ops do natively
        onnxruntime_backend.share_thread_pools(args.ort_threads)
        workers: list[Worker] = []  # the one this process makes below
        host = Host(cache_dir=pathlib.Path(args.cache_dir), ort_threads=args.ort_threads,
                    limits=Limits().updated(json.loads(args.limits)),
                    progress=lambda message: log.info("progress", message=message),
                    overdue=lambda what: workers[0].overdue(what) if workers else os._exit(EXIT_OVERDUE))
        from .services.invoker import CommandInvoker
        # a graph's operators invoke commands over this worker's own connection
        invoker = CommandInvoker.awaiting(args.client_id)
        served, runner = open_runner(pathlib.Path(args.pipeline), host, log, args.client_id, invoker)
        served = served.with_overrides(broker=args.broker, tls_ca=args.tls_ca, username=args.username,
                                       password_file=args.password_file)
        worker = Worker(served, runner, args.client_id, log, WorkerMetrics(args.client_id), retire=args.retire,
                        invoker=invoker, limits=host.limits)
        worker.parent = os.getppid()
        workers.append(worker)
    except WasinnError as e:
        log.error("cannot-start", message=str(e))
        return EXIT_CONFIG
    runner.warm_up(log)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    log.info("started", stages=runner.names, ort_threads=args.ort_threads)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
