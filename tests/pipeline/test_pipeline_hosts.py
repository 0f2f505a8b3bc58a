"""Workers on two machines sharing one source: two worker namespaces and a broker namespace
joined by veth pairs (TLS and a password on the broker's links). Throughput with one and
with two worker hosts; a broker restart rescues nobody; then one host loses its link
mid-stream and every message is still answered, by the other, which rescues the lost
worker's session."""
from __future__ import annotations

import time

import pytest

from support.pipeline_certs import Certificates
from support.pipeline_service import Broker, Results, Service, check_predictions, pipeline_with, send, stream

USERS = {"cam-7": "correct horse battery staple"}


@pytest.fixture(scope="module")
def setup(net, tmp_path_factory):
    d = tmp_path_factory.mktemp("hosts")
    certs = Certificates(d / "certs", addresses=net.hub_addresses())
    (d / "password").write_text(USERS["cam-7"] + "\n")
    # keepalive 5 s: a lost link is noticed in ~8 s, and its will is published 5 s later
    pipeline = pipeline_with(d, tls={"ca": "certs/ca.crt"}, username="cam-7", passwordFile="password", keepalive=5)
    with Broker(certs=certs, users=USERS, host="0.0.0.0", netns=net.hub, persistence=True) as broker:
        yield broker, pipeline


def host(net, broker, pipeline, name: str) -> Service:
    return Service(broker, workers=1, node=name, pipeline=pipeline, netns=net.spokes[name],
                   address=f"{net.hub_address(name)}:{broker.port}", extra=("--drain-timeout", "5"))


def burst(broker, results, prefix: str, n: int = 60) -> tuple[float, dict[str, int]]:
    messages = stream(n, prefix)
    start = time.perf_counter()
    send(broker, messages)
    results.wait_for(messages, timeout=90)
    wall = max(results.arrived[i] for i in messages) - start
    check_predictions(results, messages)
    split: dict[str, int] = {}
    for ident in messages:
        w = results.by_id[ident][0]["worker"]
        split[w] = split.get(w, 0) + 1
    return n / wall, split


def test_two_worker_hosts_share_the_load_and_survive_the_loss_of_one(net, setup):
    broker, pipeline = setup
    with Results(broker, persistent=True) as results, host(net, broker, pipeline, "host1") as h1:
        h1.wait_subscribed(1)
        burst(broker, results, "warm", 6)
        one_host, _ = burst(broker, results, "one-host")
        with host(net, broker, pipeline, "host2") as h2:
            h2.wait_subscribed(1)
            burst(broker, results, "warm2", 6)
            two_hosts, split = burst(broker, results, "two-hosts")
            assert set(split) == {"image-classification-host1-0", "image-classification-host2-0"}, split

            # A broker restart is no lost machine: mosquitto publishes every will when it stops,
            # and the workers are up again within the grace, so nobody rescues anybody.
            # (mosquitto 2.0.11 drops what is published to a shared subscription after its
            # restart until a member has subscribed again: wait for both.)
            subscribed = len(h1.find("subscribed")) + len(h2.find("subscribed"))
            broker.restart()
            restarted = time.monotonic()
            while len(h1.find("subscribed")) + len(h2.find("subscribed")) < subscribed + 2:
                assert time.monotonic() - restarted < 60, h1.log_tail() + h2.log_tail()
                time.sleep(0.05)
            burst(broker, results, "after-restart", 20)
            time.sleep(max(0.0, restarted + 3 * 5 - time.monotonic()))  # past the grace (keepalive 5 s)
            assert not h1.find("worker-lost") and not h2.find("worker-lost")

            # host1 loses its link while it works on the stream (it holds up to receiveMaximum)
            messages = stream(60, "cut")
            send(broker, messages)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and sum(
                    b[0]["worker"] == "image-classification-host1-0"
                    for i, b in list(results.by_id.items()) if i in messages) < 3:
                time.sleep(0.01)
            net.cut("host1")
            answered_at_cut = sum(i in messages for i in list(results.by_id))
            cut = time.perf_counter()
            results.wait_for(messages, timeout=180)
            recovered = time.perf_counter() - cut
            check_predictions(results, messages)
            lost = h2.wait_event("worker-lost", 10, worker="image-classification-host1-0")
            h2.wait_event("slot-rescued", 60, worker="image-classification-host1-0")
            h2_events = list(h2.events)
        h1_events = list(h1.events)
    # host1 noticed, and kept trying with backoff
    assert any(e.get("event") == "reconnecting" for e in h1_events)
    # everything answered after the cut came from host2's processes: its own worker and its rescuer
    done_on_h1 = {e["id"] for e in h1_events if e.get("event") == "done"}
    done_on_h2 = {e["id"] for e in h2_events if e.get("event") == "done"}
    assert set(messages) <= done_on_h1 | done_on_h2
    rescued = {e["id"] for e in h2_events if e.get("event") == "done" and e.get("worker") == lost["worker"]}
    assert rescued, "host2 answered nothing of host1's session"
    print(f"\ntwo hosts: 1 worker host {one_host:.1f} photos/s, 2 worker hosts {two_hosts:.1f} photos/s "
          f"(split {sorted(split.values())}); host1's link cut when {answered_at_cut} of 60 were answered; all 60 "
          f"answered {recovered:.1f} s after the cut, {len(rescued)} of them from host1's session by host2's "
          f"rescuer, {len(set(messages) & done_on_h1)} by host1 before the cut")
