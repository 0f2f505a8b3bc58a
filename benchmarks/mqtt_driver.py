"""`python mqtt_driver.py PORT N PAYLOAD`: the publisher and the subscriber of the operators
section's MQTT row (bench_operators._mqtt_map), in a process of their own, as a worker's
peers are: their network threads and callbacks would otherwise take the worker's GIL in
the middle of the span it times. Prints `ready` once subscribed to bench/out, waits for a
line on stdin, then publishes N messages of PAYLOAD to bench/in on the broker at 127.0.0.1:PORT,
one at a time (QoS 1, each with its `id` user property), each once the previous one's result
came, and prints `done`."""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def started(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def main() -> int:
    port, n, payload = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
    results, subscribed = threading.Semaphore(0), threading.Event()
    sub = started(port)
    sub.on_message = lambda *_: results.release()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.subscribe("bench/out", qos=1)
    if not subscribed.wait(10):
        return "mqtt_driver: the subscription to bench/out was not acknowledged in 10 s"
    pub = started(port)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("id", f"m{i}")]
        pub.publish("bench/in", payload, qos=1, properties=props).wait_for_publish(timeout=10)
        if not results.acquire(timeout=30):
            return f"mqtt_driver: no result for message {i} in 30 s"
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
