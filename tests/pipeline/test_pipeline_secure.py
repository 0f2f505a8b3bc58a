"""`wasinn serve` against mosquitto as an edge platform runs it: TLS only, a password file,
persistence on. The shipped pipeline with tls/username/passwordFile added; a wrong
password; certificate mistakes; a broker restart mid-stream; a burst of 1,000 photos."""
from __future__ import annotations

import dataclasses
import io
import pathlib
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from support.pipeline_certs import Certificates
from support.pipeline_service import (IMAGES, Broker, Results, Service, check_predictions, client, pipeline_with, publish,
                                      send, stream)

from wasinn.errors import WasinnError
from wasinn.pipeline import connection
from wasinn.pipeline.schema import Tls

ROOT = pathlib.Path(__file__).resolve().parents[2]
USERS = {"cam-7": "correct horse battery staple"}
WORKERS = ("image-classification-test-0", "image-classification-test-1")


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    d = tmp_path_factory.mktemp("mqtt-secrets")
    certs = Certificates(d / "certs")
    (d / "password").write_text(USERS["cam-7"] + "\n")  # as secret files are written: with a newline
    (d / "wrong-password").write_text("Tr0ub4dor&3\n")
    return d, certs


@pytest.fixture(scope="module")
def broker(secrets):
    with Broker(certs=secrets[1], users=USERS, persistence=True) as b:
        yield b


@pytest.fixture(scope="module")
def secured(secrets):
    d, certs = secrets
    return pipeline_with(d, tls={"ca": "certs/ca.crt"}, username="cam-7", passwordFile="password")


@pytest.fixture(scope="module")
def service(broker, secured):
    with Service(broker, workers=2, pipeline=secured, log_level="info") as s:
        s.wait_ready()
        yield s


def test_the_shipped_pipeline_runs_over_tls_with_a_password(broker, service):
    with Results(broker) as results:
        messages = {f"tls-{name}": name for name in IMAGES}
        send(broker, messages)
        results.wait_for(messages, timeout=60)
        check_predictions(results, messages)
    serving = service.find("serving")[0]
    assert serving["tls"] is True and serving["username"] == "cam-7"
    # TLS only: a plain-TCP client gets no CONNACK from that port
    plain = broker.new_client()
    plain.username_pw_set(*broker.user)
    accepted = threading.Event()
    plain.on_connect = lambda *a: accepted.set()
    plain.connect("127.0.0.1", broker.port)
    for _ in range(20):
        if plain.loop(0.1) != 0:  # the broker hung up
            break
    assert not accepted.is_set()


def test_a_wrong_password_is_reported_at_once_and_the_service_exits(broker, secured, secrets):
    start = time.monotonic()
    with Service(broker, workers=1, pipeline=secured, log_level="info",
                 extra=("--password-file", str(secrets[0] / "wrong-password"))) as service:
        code = service.proc.wait(timeout=60)
        service._reader.join(timeout=10)
    assert code == 1, service.log_tail()
    [refused] = service.find("not-authorised")
    assert "refused user 'cam-7'" in refused["message"] and "not authorised (Not authorized)" in refused["message"]
    [error] = [e["line"] for e in service.find("text") if e["line"].startswith("wasinn: error:")]
    assert "not authorised" in error, error
    assert not service.find("worker-started")  # refused before any worker ran
    print(f"\nwrong password: exit {code} after {time.monotonic() - start:.1f} s: {error}")


def test_certificate_mistakes_name_the_file_and_what_is_wrong(tmp_path, secrets):
    certs = secrets[1]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(WasinnError, match=rf"^mqtt.tls.ca {garbage}: no PEM certificate in it"):
        connection.tls_context(Tls(garbage))
    with pytest.raises(WasinnError, match=rf"^mqtt.tls.key {certs.server_key}: this key does not belong to "
                                          rf"the certificate {certs.client_cert}"):
        connection.tls_context(Tls(certs.ca, certs.client_cert, certs.server_key))
    with pytest.raises(WasinnError, match=rf"^mqtt.tls.key {certs.ca}: no PEM private key"):
        connection.tls_context(Tls(certs.ca, certs.client_cert, certs.ca))
    connection.tls_context(Tls(certs.ca, certs.client_cert, certs.client_key))
    # and on the command line, before anything is built
    done = subprocess.run([sys.executable, "-m", "wasinn", "serve", str(ROOT / "pipelines/image-classification.yaml"),
                           "--tls-ca", str(garbage)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"wasinn: error: mqtt.tls.ca {garbage}: no PEM certificate in it "
                                                "(expected -----BEGIN CERTIFICATE-----)"]


def test_a_broker_that_fails_verification_is_refused_in_one_line(broker, secured, tmp_path):
    other = Certificates(tmp_path / "other")  # a CA that did not sign the broker's certificate
    with Service(broker, workers=1, pipeline=secured, log_level="info",
                 extra=("--tls-ca", str(other.ca))) as s:
        assert s.proc.wait(timeout=60) == 1
        s._reader.join(timeout=10)
    [refused] = s.find("connection-refused")
    # (mosquitto sends its CA along, so OpenSSL calls it a self-signed certificate in the chain)
    assert refused["message"] == (f"TLS: the certificate of the broker at {broker.address} failed verification "
                                  f"against mqtt.tls.ca {other.ca}: self-signed certificate in certificate chain")


def _memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak resident set) and VmRSS of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmHWM", "VmRSS")}


def test_a_burst_of_1000_photos_keeps_worker_memory_flat(broker, service):
    """The broker holds the burst; each worker holds at most mqtt.receiveMaximum (2)
    messages at once, so its memory does not grow with the backlog: the workers' peak
    when 500 are answered (the rest still queued) is their peak at the end. Oversized images
    among them still go to the dead-letter topic."""
    pids = service.worker_pids()
    huge = io.BytesIO()
    Image.new("1", (8000, 8000)).save(huge, "PNG")  # 64 M pixels in a few KB: over maxPixels
    with Results(broker) as results:
        before = {w: _memory_mib(pids[w]) for w in WORKERS}
        messages = stream(1000, "burst")
        start = time.perf_counter()
        c = client(broker)
        for i, (ident, name) in enumerate(messages.items()):
            publish(c, IMAGES[name], ident)
            if i % 100 == 50:
                publish(c, huge.getvalue(), f"oversized-{i}")
        c.disconnect()
        c.loop_stop()
        published = time.perf_counter() - start
        deadline = time.monotonic() + 300
        while sum(i.startswith("burst") for i in list(results.by_id)) < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        backlog = 1000 - sum(i.startswith("burst") for i in list(results.by_id))
        middle = {w: _memory_mib(pids[w]) for w in WORKERS}
        results.wait_for(messages, timeout=600)
        wall = time.perf_counter() - start
        check_predictions(results, messages)
        oversized = {f"oversized-{i}" for i in range(50, 1000, 100)}
        results.wait_for(oversized, timeout=60)
        assert set(results.dead) == oversized and not oversized & set(results.by_id)
        assert all("(64000000 pixels); the source takes at most 40000000" in results.dead[i][0]["error"]["message"]
                   for i in oversized)
    after = {w: _memory_mib(pids[w]) for w in WORKERS}
    for w in WORKERS:
        # keeping even one photo (140-470 KB) of each of its ~250 messages would add over 30 MiB
        assert after[w]["VmHWM"] - middle[w]["VmHWM"] < 24, (middle, after)
    print(f"\nburst: 1000 photos (+10 oversized) published in {published:.1f} s, all answered in {wall:.1f} s "
          f"({1000 / wall:.1f}/s); worker peak RSS before / with {backlog} still queued / at the end: "
          + ", ".join(f"{before[w]['VmHWM']:.0f} / {middle[w]['VmHWM']:.0f} / {after[w]['VmHWM']:.0f} MiB"
                      for w in WORKERS))


def test_a_broker_restart_mid_stream_loses_nothing(broker, service):
    """60 photos queued; the broker (persistence on) restarts after a few results. The
    workers reconnect with backoff and resume their sessions; every photo is answered.
    /healthz says not ready while the broker is away."""
    messages = stream(60, "restart")
    n_events = len(service.events)
    with Results(broker, persistent=True) as results:
        send(broker, messages)
        deadline = time.monotonic() + 60
        while results.count() < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        broker.stop()
        answered_before = results.count()
        deadline = time.monotonic() + 20
        while service.health()[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, body = service.health()
        assert status == 503 and body["status"] == "degraded", body
        time.sleep(1.0)  # the workers try, and back off
        broker.start()
        results.wait_for(messages, timeout=180)
        service.wait_ready(timeout=60)
        later = stream(6, "after-restart")  # and what comes after the restart flows as before
        send(broker, later)
        results.wait_for(later, timeout=60)
        check_predictions(results, {**messages, **later})
        # The same body twice is one result delivered twice; different bodies are two runs.
        runs = {i: len({(b["worker"], b["timing_ms"]["total"]) for b in results.by_id[i]}) for i in messages}
        deliveries = {i: len(results.by_id[i]) for i in messages}
    events = service.events[n_events:]
    reconnecting = [e for e in events if e.get("event") == "reconnecting"]
    assert {e.get("worker") for e in reconnecting} >= set(WORKERS)
    assert {e.get("worker") for e in events if e.get("event") == "connected" and e.get("session_present")} >= set(WORKERS)
    ran_twice = sorted(i for i, n in runs.items() if n > 1)
    # Bound: what the workers held when the broker went (receiveMaximum each); in practice none,
    # since a redelivered message a worker has answered is acknowledged without running it again.
    assert len(ran_twice) <= 2 * len(WORKERS), ran_twice
    skipped = [e["id"] for e in events if e.get("event") == "redelivered"]
    print(f"\nbroker restart: {answered_before} of 60 answered before it, 60 of 60 after; ran twice: "
          f"{ran_twice or 'none'}; delivered twice: {sum(n > 1 for n in deliveries.values())}; redelivered and "
          f"acknowledged without a rerun: {skipped or 'none'}; reconnect attempts logged: {len(reconnecting)}")


def test_the_password_comes_from_its_file_without_the_newline_or_from_the_environment(tmp_path, monkeypatch):
    import dataclasses
    from wasinn.pipeline.schema import Mqtt
    m = Mqtt("127.0.0.1", 8883, "g", "dead", username="cam-7", password_file=tmp_path / "pw")
    (tmp_path / "pw").write_text("s3cret\n")
    assert connection.password(m) == "s3cret"
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(WasinnError, match=rf"^mqtt.passwordFile {tmp_path / 'pw'}: the file is empty$"):
        connection.password(m)
    monkeypatch.setenv(connection.PASSWORD_ENV, "from-env")
    assert connection.password(dataclasses.replace(m, password_file=None)) == "from-env"
    assert connection.password(dataclasses.replace(m, username=None, password_file=None)) is None


def _first_connect(m, log) -> connection.Link:
    link = connection.Link(m, "client-cert-probe", log, on_up=lambda client, present: None)
    link.start(clean_start=True, properties=None)
    deadline = time.monotonic() + 20
    while not (link.connected.is_set() or link.ended.is_set()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return link


def test_client_certificates(secrets):
    """A broker that requires client certificates: accepted with mqtt.tls.cert/key, refused
    in one line without them."""
    from wasinn.pipeline.jsonlog import EventLog
    from wasinn.pipeline.schema import Mqtt
    certs = secrets[1]
    with Broker(certs=certs, users=USERS, client_certs=True) as b:
        m = Mqtt("127.0.0.1", b.port, "g", "dead", username="cam-7", password_file=secrets[0] / "password",
                 tls=Tls(certs.ca, certs.client_cert, certs.client_key))
        lines = io.StringIO()
        link = _first_connect(m, EventLog(stream=lines))
        assert link.connected.is_set(), lines.getvalue()
        link.close()
        link = _first_connect(dataclasses.replace(m, tls=Tls(certs.ca)), EventLog(stream=lines))
        assert link.ended.is_set() and not link.connected.is_set(), lines.getvalue()[-1500:]
        assert link.fatal.startswith(f"TLS with the broker at 127.0.0.1:{b.port} failed: ") and \
            link.fatal.endswith("(does the broker want a client certificate? mqtt.tls.cert)"), link.fatal
    print(f"\nno client certificate: {link.fatal}")


def test_a_tls_brokers_refusal_is_heard_even_where_pahos_connect_met_the_reset_first(secrets):
    """Under TLS 1.3 a broker refuses a client certificate (or its lack) after the handshake,
    as an alert, then resets the connection; paho, which writes its CONNECT at once, may meet
    the reset instead (seen on a loaded machine: endless "connection lost: Unspecified error"
    reconnects). The link then listens for the alert on a connection of its own that sends
    nothing: the refusal is heard; a broker that accepts says nothing, within _ALERT_WAIT."""
    from wasinn.pipeline.jsonlog import EventLog
    from wasinn.pipeline.schema import Mqtt
    certs = secrets[1]
    with Broker(certs=certs, users=USERS, client_certs=True) as b:
        m = Mqtt("127.0.0.1", b.port, "g", "dead", username="cam-7", password_file=secrets[0] / "password",
                 tls=Tls(certs.ca))
        without = connection.Link(m, "alert-probe", EventLog(stream=io.StringIO()), on_up=lambda *_: None)
        assert "ALERT" in without._listen_for_alert()
        with_cert = connection.Link(dataclasses.replace(m, tls=Tls(certs.ca, certs.client_cert, certs.client_key)),
                                    "alert-probe", EventLog(stream=io.StringIO()), on_up=lambda *_: None)
        assert with_cert._listen_for_alert() == ""
