"""One pipeline worker: an MQTT session, the pipeline's stage instances, one message at a time.

The supervisor (`wasinn serve`) runs each worker as `python -m wasinn.pipeline.worker`.

Delivery: the worker subscribes at QoS 1 to `$share/GROUP/SOURCE-TOPIC` with a
persistent session (clean_start false, a session expiry), and acknowledges a message
only after the broker has acknowledged its result (or its dead-letter record). A
worker that dies mid-message has acknowledged nothing for it, so the broker keeps the
message in the worker's session and sends it again when the worker's successor
connects under the same client id. Results may then come twice: both carry the
message's id.

A retiring worker (`--retire`) resumes the session of a worker slot that is no longer
wanted, unsubscribes, finishes every message the broker had queued for it, and ends
the session, so that the broker stops handing that slot a share of the messages.

Message ids: the MQTT 5 user property `id`, else the correlation data, else
`sha256:` and the first 16 hex digits of the payload's sha256.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import pathlib
import queue
import signal
import socket
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..errors import WasinnError
from ..runtime import Host
from .graph import GraphRunner, StageFailure
from .jsonlog import EventLog
from .metrics import WorkerMetrics
from .schema import Pipeline, load_pipeline

# Exit status for "this pipeline cannot start" (sysexits' EX_CONFIG): the supervisor
# does not restart a worker that exits with it.
EXIT_CONFIG = 78
# A retiring worker leaves once the broker has sent it nothing for this long: the
# broker sends a session's queued messages as soon as the previous ones are acknowledged.
RETIRE_IDLE_SECONDS = 2.0


def decode_image(payload: bytes, max_pixels: int, source: str) -> np.ndarray:
    """PNG/JPEG/... bytes to uint8 RGB [H, W, 3]; the size is checked from the header,
    before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(payload)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise StageFailure(source, "invalid-input", f"the image is {w}x{h} ({w * h} pixels); the source "
                                                            f"takes at most {max_pixels} (maxPixels)")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise StageFailure(source, "invalid-input",
                           f"cannot decode the payload ({len(payload)} bytes) as an image: {e}") from None


def message_id(msg: mqtt.MQTTMessage) -> str:
    props = msg.properties
    for key, value in getattr(props, "UserProperty", None) or []:
        if key == "id":
            return value
    correlation = getattr(props, "CorrelationData", None)
    if correlation:
        return correlation.decode("utf-8", "backslashreplace")
    return "sha256:" + hashlib.sha256(msg.payload).hexdigest()[:16]


class Worker:
    def __init__(self, pipeline: Pipeline, runner: GraphRunner, client_id: str, log: EventLog,
                 metrics: WorkerMetrics, *, retire: bool = False):
        self.pipeline, self.runner, self.client_id, self.log, self.metrics = pipeline, runner, client_id, log, metrics
        self.retire = retire
        self.last_activity = time.monotonic()
        # (session number, message): a message from an earlier connection is not acknowledged
        # on this one; the broker sends it again in the resumed session.
        self.inbox: queue.Queue[tuple[int, mqtt.MQTTMessage]] = queue.Queue()
        self.session = 0
        self.connected = threading.Event()
        self.stopping = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        c.on_connect, c.on_disconnect, c.on_message, c.on_subscribe = (
            self._on_connect, self._on_disconnect, self._on_message, self._on_subscribe)
        c.on_connect_fail = lambda client, userdata: self.log.warning(
            "connect-failed", broker=f"{pipeline.mqtt.host}:{pipeline.mqtt.port}", retrying=True)
        c.reconnect_delay_set(min_delay=0.1, max_delay=5)
        # Results and acknowledgements are small packets: without TCP_NODELAY, Nagle's
        # algorithm holds each one back behind the last unacknowledged segment (measured:
        # ~15 ms per message on loopback, half the throughput).
        c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = c

    # --- network thread -------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.log.error("connect-refused", reason=str(reason_code))
            return
        self.session += 1
        self.last_activity = time.monotonic()
        self.connected.set()
        self.log.info("connected", broker=f"{self.pipeline.mqtt.host}:{self.pipeline.mqtt.port}",
                      session_present=bool(flags.session_present))
        shared = f"$share/{self.pipeline.mqtt.group}/{self.pipeline.source.topic}"
        if self.retire:
            client.unsubscribe(shared)
            self.log.info("retiring", session_present=bool(flags.session_present))
        else:
            client.subscribe(shared, options=SubscribeOptions(qos=1))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.log.error("subscribe-refused", reasons=[str(rc) for rc in reason_codes])
            return
        self.metrics.ready.set(1)
        self.log.info("subscribed", topic=self.pipeline.source.topic, group=self.pipeline.mqtt.group)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.metrics.ready.set(0)
        if not self.stopping.is_set():
            self.log.warning("disconnected", reason=str(reason_code))

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        if self.stopping.is_set():
            return  # left unacknowledged: the broker sends it again to this session
        self.metrics.queued.inc()
        self.last_activity = time.monotonic()
        self.inbox.put((self.session, msg))

    # --- main thread ----------------------------------------------------------------
    def run(self) -> int:
        m = self.pipeline.mqtt
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = m.session_expiry
        props.ReceiveMaximum = m.receive_maximum
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive, clean_start=False, properties=props)
        self.client.loop_start()
        try:
            while True:
                try:
                    session, msg = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    if self.stopping.is_set() or self._retired():
                        break
                    continue
                try:
                    self.handle(session, msg)
                finally:
                    self.metrics.queued.dec()
                    self.last_activity = time.monotonic()
        finally:
            if self.retire and not self.stopping.is_set():
                ends = Properties(PacketTypes.DISCONNECT)
                ends.SessionExpiryInterval = 0  # the broker forgets the slot and its share
                self.client.disconnect(properties=ends)
            else:
                self.client.disconnect()
            self.client.loop_stop()
            self.runner.close()
        self.log.info("stopped")
        return 0

    def _retired(self) -> bool:
        return (self.retire and self.connected.is_set() and self.inbox.empty()
                and time.monotonic() - self.last_activity > RETIRE_IDLE_SECONDS)

    def stop(self) -> None:
        """Takes no new message; the ones already received are finished."""
        if not self.stopping.is_set():
            self.log.info("stopping", queued=self.inbox.qsize())
        self.stopping.set()

    def handle(self, session: int, msg: mqtt.MQTTMessage) -> None:
        if session != self.session:
            return
        ident = message_id(msg)
        received = time.perf_counter()
        self.metrics.received.inc()
        self.log.debug("received", id=ident, mid=msg.mid, dup=bool(msg.dup), bytes=len(msg.payload))
        source = self.pipeline.source
        try:
            image = decode_image(msg.payload, source.max_pixels, source.name)
            decoded = time.perf_counter()
            outcome = self.runner.run(image)
            seconds = {source.name: decoded - received, **outcome.seconds}
            topic = self.pipeline.sink.topic
            body = {"id": ident, "result": json.loads(outcome.result),
                    "timing_ms": {k: round(v * 1000, 3) for k, v in seconds.items()}, "worker": self.client_id}
        except StageFailure as f:
            seconds = {}
            topic, body = self.pipeline.mqtt.dead_letter_topic, self._dead_letter(ident, msg, f.stage, f.kind, f.message)
        except Exception as e:  # a host-side bug must not stop the service: dead-letter the message
            seconds = {}
            topic, body = self.pipeline.mqtt.dead_letter_topic, self._dead_letter(
                ident, msg, "host", "host-error", f"{type(e).__name__}: {e}")
        for stage, s in seconds.items():
            self.metrics.stage_seconds.labels(stage=stage).observe(s)
        body["timing_ms"] = {**body.get("timing_ms", {}), "total": round((time.perf_counter() - received) * 1000, 3)}
        publishing = time.perf_counter()
        self._publish(topic, body, msg)
        if session == self.session:
            self.client.ack(msg.mid, msg.qos)
        done = time.perf_counter()
        total = done - received
        self.metrics.message_seconds.observe(total)
        if topic == self.pipeline.sink.topic:
            self.metrics.published.inc()
            self.log.debug("done", id=ident, mid=msg.mid, ms=round(total * 1000, 3),
                           publish_ms=round((done - publishing) * 1000, 3))
        else:
            self.metrics.failed(body["error"]["stage"], body["error"]["kind"])
            self.log.warning("dead-letter", id=ident, **body["error"])

    def _dead_letter(self, ident: str, msg: mqtt.MQTTMessage, stage: str, kind: str, message: str) -> dict:
        return {"id": ident, "error": {"stage": stage, "kind": kind, "message": message},
                "worker": self.client_id, "source_topic": msg.topic, "payload_bytes": len(msg.payload),
                "payload_base64": base64.b64encode(msg.payload).decode()}

    def _publish(self, topic: str, body: dict, msg: mqtt.MQTTMessage) -> None:
        """Publishes at QoS 1 and returns once the broker has acknowledged it. Across a
        lost connection it publishes again, so a result may reach the broker twice."""
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("id", body["id"])]
        props.ContentType = "application/json"
        correlation = getattr(msg.properties, "CorrelationData", None)
        if correlation:
            props.CorrelationData = correlation
        payload = json.dumps(body).encode()
        while True:
            self.connected.wait()
            info = self.client.publish(topic, payload, qos=1, properties=props)
            try:
                info.wait_for_publish(timeout=30)
                if info.is_published():
                    return
            except RuntimeError:
                pass  # the connection went: publish again once it is back
            self.log.warning("publish-retry", topic=topic, id=body["id"])


def _warm_up(pipeline: Pipeline, runner: GraphRunner, log: EventLog) -> None:
    """Pillow's first decode (plugin loading) and each stage's first run are several
    times slower than the next ones: take them now, not on the first message."""
    from PIL import Image
    png = io.BytesIO()
    Image.new("RGB", (224, 224), (127, 127, 127)).save(png, "PNG")
    try:
        runner.run(decode_image(png.getvalue(), pipeline.source.max_pixels, pipeline.source.name))
    except StageFailure as e:  # a pipeline that wants other images: it still warmed up what ran
        log.debug("warm-up", message=str(e))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wasinn.pipeline.worker",
                                 description="One worker of `wasinn serve` (started by its supervisor).")
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--broker", help="HOST:PORT instead of the pipeline file's")
    ap.add_argument("--ort-threads", type=int, default=1)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--retire", action="store_true",
                    help="finish what the broker holds for this client id, then end its session")
    args = ap.parse_args(argv)
    log = EventLog(level=args.log_level, worker=args.client_id)
    try:
        pipeline = load_pipeline(args.pipeline)
        if args.broker:
            pipeline = pipeline.with_broker(args.broker)
        host = Host(cache_dir=pathlib.Path(args.cache_dir), ort_threads=args.ort_threads,
                    progress=lambda message: log.info("progress", message=message))
        runner = GraphRunner(pipeline, host)
    except WasinnError as e:
        log.error("cannot-start", message=str(e))
        return EXIT_CONFIG
    _warm_up(pipeline, runner, log)
    worker = Worker(pipeline, runner, args.client_id, log, WorkerMetrics(args.client_id), retire=args.retire)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    log.info("started", stages=list(runner.stages), ort_threads=args.ort_threads)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
