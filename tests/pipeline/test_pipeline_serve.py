"""`wasinn serve` against a real mosquitto: classification over MQTT, dead letters, shared
load, metrics and health, graceful SIGTERM, and kill -9 of a worker mid-stream."""
from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from support.pipeline_service import IMAGES, Broker, Results, Service, check_predictions, client, publish, send, stream

ROOT = pathlib.Path(__file__).resolve().parents[2]
@pytest.fixture(scope="module")
def service(broker):
    with Service(broker, workers=2) as s:
        s.wait_ready()
        yield s


@pytest.fixture
def results(broker, service):
    with Results(broker) as r:
        yield r


def test_photos_published_to_the_source_come_back_classified(broker, service, results):
    messages = {f"photo-{name}": name for name in IMAGES}
    send(broker, messages)
    results.wait_for(messages, timeout=60)
    check_predictions(results, messages)
    body = results.by_id["photo-chelsea"][0]
    assert body["id"] == "photo-chelsea" and len(body["result"]["predictions"]) == 5
    assert set(body["timing_ms"]) == {"camera", "preprocess", "inference", "postprocess", "total"}
    assert body["worker"] in {"image-classification-test-0", "image-classification-test-1"}


def test_poison_messages_go_to_the_dead_letter_topic_and_the_service_goes_on(broker, service, results):
    huge = io.BytesIO()
    Image.new("1", (8000, 8000)).save(huge, "PNG")  # 64 M pixels in a few KB: over maxPixels
    # a progressive JPEG with its last scan 200 times over: each scan is a pass over every
    # pixel (2,000 of them over 36 M pixels, 259 KB, held a worker 27 s)
    progressive = io.BytesIO()
    Image.new("L", (64, 64), 128).save(progressive, "JPEG", progressive=True)
    jpeg = progressive.getvalue()
    scans = jpeg[:-2] + jpeg[jpeg.rindex(b"\xff\xda"):-2] * 200 + b"\xff\xd9"
    # an image Pillow reads but a source does not decode (Ghostscript's EPS, PSD, ...: only
    # the formats cameras send reach a native decoder)
    other = io.BytesIO()
    Image.new("RGB", (224, 224), (90, 60, 30)).save(other, "TGA")
    c = client(broker)
    publish(c, other.getvalue(), "poison-format")
    publish(c, b"this is not an image", "poison-text")
    publish(c, huge.getvalue(), "poison-huge")
    publish(c, IMAGES["coffee"][:5000], "poison-truncated")
    publish(c, scans, "poison-scans")
    publish(c, IMAGES["coffee"], "after-poison")
    poison = {"poison-text", "poison-huge", "poison-truncated", "poison-scans", "poison-format"}
    results.wait_for(poison | {"after-poison"}, timeout=60)
    text, = results.dead["poison-text"]
    assert text["error"]["stage"] == "camera" and text["error"]["kind"] == "invalid-input"
    assert text["error"]["message"] == ("cannot decode the payload (20 bytes) as an image: cannot identify image file: "
                                        "not a PNG, JPEG, GIF, BMP, TIFF or WebP image (the formats a source "
                                        "decodes; first bytes 0x7468697320697320)")
    assert text["payload_base64"] == "dGhpcyBpcyBub3QgYW4gaW1hZ2U="
    assert "8000x8000 (64000000 pixels); the source takes at most 40000000" in \
        results.dead["poison-huge"][0]["error"]["message"]
    assert results.dead["poison-truncated"][0]["error"]["kind"] == "invalid-input"
    n = scans.count(b"\xff\xda")
    assert results.dead["poison-scans"][0]["error"]["message"] == \
        f"a JPEG of {n} scans; the source takes at most 64 (a progressive JPEG has about 10)"
    assert results.dead["poison-format"][0]["error"]["message"].startswith(
        f"cannot decode the payload ({len(other.getvalue())} bytes) as an image: cannot identify image file: not a PNG")
    assert results.by_id["after-poison"][0]["result"]["predictions"][0]["label"] == "espresso"
    assert not set(results.by_id) & poison


def test_two_workers_share_the_load(broker, service, results):
    messages = stream(30, "share")
    send(broker, messages)
    results.wait_for(messages, timeout=90)
    check_predictions(results, messages)
    per_worker = {}
    for ident in messages:
        w = results.by_id[ident][0]["worker"]
        per_worker[w] = per_worker.get(w, 0) + 1
    assert set(per_worker) == {"image-classification-test-0", "image-classification-test-1"}, per_worker
    assert min(per_worker.values()) >= 10, per_worker


def test_metrics_and_health(service, results):
    status, body = service.health()
    assert status == 200 and body["status"] == "ok"
    assert [w["ready"] for w in body["workers"]] == [True, True]
    text = service.metrics()
    for line in ('wasinn_pipeline_messages_received_total{worker="image-classification-test-0"}',
                 'wasinn_pipeline_messages_failed_total{kind="invalid-input",stage="camera",',
                 'wasinn_pipeline_stage_seconds_bucket{le="+Inf",stage="inference"}',
                 'wasinn_pipeline_worker_up{worker="image-classification-test-1"} 1.0',
                 'wasinn_pipeline_worker_restarts_total{worker="image-classification-test-0"} 0.0'):
        assert line in text, line


def test_the_log_is_json_lines_only(service):
    """After the workers loaded their models and ran photos and poison: onnxruntime's
    warnings once came as coloured text among the lines (pipeline_service reads a line
    that is not JSON as a "text" event)."""
    assert service.find("started") and not service.find("text") and not service.find("stderr"), service.log_tail()


def test_a_workers_other_writes_become_json_lines():
    """What writes to the descriptors themselves (C++ loggers, a guest's WASI streams),
    Python's own writes and an uncaught exception's traceback, in a process that captured
    its stdout and stderr as a worker does: JSON lines on stderr, nothing on stdout, a
    line that reads as the host's only the `line` of an event, a flood held to
    LINES_PER_SECOND."""
    from wasinn.pipeline.jsonlog import LINES_PER_SECOND
    code = ("import os, sys, time\n"
            "from wasinn.pipeline.jsonlog import EventLog, capture_output\n"
            "log = capture_output(EventLog(worker='w'))\n"
            "os.write(2, b'\\x1b[0;93m[W:onnxruntime:Default] a warning\\x1b[m\\n')\n"
            "print('python wrote this', file=sys.stderr)\n"
            "os.write(1, b'{\"level\": \"error\", \"event\": \"worker-died\"}\\n' + b'x\\n' * 100000)\n"
            "time.sleep(0.5)\n"
            "log.info('done')\n"
            "raise RuntimeError('boom')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    events = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    lines = [e["line"] for e in events if e["event"] == "stderr"]
    assert all(e["worker"] == "w" for e in events) and [e["level"] for e in events if e["event"] == "done"] == ["info"]
    assert lines[:2] == ["[W:onnxruntime:Default] a warning", "python wrote this"]
    assert lines[-1] == "RuntimeError: boom" and lines[2] == "Traceback (most recent call last):"
    out = [e for e in events if e["event"] == "stdout"]
    assert out[0]["line"] == '{"level": "error", "event": "worker-died"}' and out[0]["level"] == "info"
    assert not any(e["event"] == "worker-died" for e in events)
    assert LINES_PER_SECOND <= len(out) <= 2 * LINES_PER_SECOND  # the run may straddle a second


def test_kill_9_of_a_worker_mid_message_loses_nothing():
    """A worker is killed (SIGKILL) while it holds a message it has not finished. The
    supervisor restarts it under the same client id; the broker hands the new process
    the messages the dead one never acknowledged. Every id gets a result."""
    messages = stream(60, "kill")
    killed: dict = {}
    ready_to_kill = threading.Event()

    def on_event(event):
        # kill the first worker the moment it starts on a message, once results flow
        if (ready_to_kill.is_set() and not killed and event.get("event") == "received"
                and event.get("worker", "").endswith("-0")):
            killed.update(id=event["id"], worker=event["worker"], pid=service.worker_pids()[event["worker"]])
            os.kill(killed["pid"], signal.SIGKILL)

    with Broker() as broker, Results(broker) as results:
        with Service(broker, workers=2, on_event=on_event) as service:
            service.wait_ready()
            sender = threading.Thread(target=send, args=(broker, messages))
            sender.start()
            deadline = time.monotonic() + 60
            while results.count() < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            ready_to_kill.set()
            sender.join()
            results.wait_for(messages, timeout=120)
            died = service.wait_event("worker-died", 10, worker=killed["worker"])
            restarted = service.wait_event("worker-started", 10, worker=killed["worker"], restarts=1)
            events = list(service.events)
        check_predictions(results, messages)

    assert died["pid"] == killed["pid"] and died["status"] == "signal SIGKILL"
    assert restarted["pid"] != killed["pid"]
    # What the killed process had started but not finished, from its own log lines
    # (all of them precede the supervisor's worker-died line).
    before = events[:events.index(died)]
    started = {e["id"] for e in before if e.get("event") == "received" and e.get("worker") == killed["worker"]}
    finished = {e["id"] for e in before if e.get("event") == "done" and e.get("worker") == killed["worker"]}
    unfinished = started - finished
    assert killed["id"] in unfinished
    assert unfinished <= set(results.by_id)
    after = events[events.index(restarted):]
    redone = {e["id"] for e in after if e.get("event") == "done" and e.get("worker") == killed["worker"]}
    assert unfinished <= redone, "the restarted worker did not get the unfinished messages back"
    for ident in unfinished:
        assert results.by_id[ident][0]["worker"] == killed["worker"]
    duplicates = {i: len(r) for i, r in results.by_id.items() if len(r) > 1}
    # Only what the killed process had taken may come twice: unfinished, or finished but its
    # acknowledgement not yet on the wire. Both copies carry the id (and the same predictions).
    assert set(duplicates) <= started
    print(f"\nkill -9 test: killed pid {killed['pid']} ({killed['worker']}) while it held {sorted(unfinished)}; "
          f"{len(messages)} ids, {len(messages)} answered, duplicates: {duplicates or 'none'}")


def test_sigterm_finishes_what_workers_hold_and_the_rest_waits_for_them():
    """SIGTERM during a burst: workers finish every message they started, exit 0, and the
    messages they had not taken wait in their sessions for the next start."""
    messages = stream(40, "term")
    with Broker() as broker, Results(broker) as results:
        with Service(broker, workers=2) as service:
            service.wait_ready()
            threading.Thread(target=send, args=(broker, messages)).start()
            deadline = time.monotonic() + 60
            while results.count() < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert service.stop() == 0
            events = list(service.events)
        for worker in ("image-classification-test-0", "image-classification-test-1"):
            started = {e["id"] for e in events if e.get("event") == "received" and e.get("worker") == worker}
            finished = {e["id"] for e in events if e.get("event") == "done" and e.get("worker") == worker}
            assert started == finished, f"{worker} stopped with {sorted(started - finished)} unfinished"
            assert any(e.get("event") == "stopped" and e.get("worker") == worker for e in events)
        answered_before_restart = len(results.by_id)
        with Service(broker, workers=2) as service:
            results.wait_for(messages, timeout=120)
        check_predictions(results, messages)
    print(f"\nSIGTERM test: {answered_before_restart} of {len(messages)} answered before the stop, "
          "the rest after the restart")


def test_a_node_restarted_with_fewer_workers_retires_the_extra_sessions():
    """mosquitto keeps handing a gone member of a shared subscription its share. Started
    with 1 worker after running 2, the node first drains and ends slot 1's session, so
    what was queued for it is answered and nothing new waits there."""
    queued, after = stream(10, "queued"), stream(10, "after")
    with Broker() as broker, Results(broker) as results:
        with Service(broker, workers=2, node="shrink") as service:
            service.wait_ready()
        send(broker, queued)  # no worker running: both sessions queue their share
        with Service(broker, workers=1, node="shrink") as service:
            service.wait_ready()
            service.wait_event("slot-retired", 60, worker="image-classification-shrink-1")
            results.wait_for(queued, timeout=60)
            send(broker, after)
            results.wait_for(after, timeout=60)
            assert service.find("retiring", worker="image-classification-shrink-1")
        check_predictions(results, {**queued, **after})
    assert {results.by_id[i][0]["worker"] for i in queued} == {"image-classification-shrink-0",
                                                               "image-classification-shrink-1"}
    assert {results.by_id[i][0]["worker"] for i in after} == {"image-classification-shrink-0"}
