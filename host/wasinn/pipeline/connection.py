"""The broker connection of every MQTT client `wasinn serve` runs: TLS, credentials, and
reconnecting with backoff.

    link = Link(pipeline.mqtt, "cams-host-0", log, on_up=..., on_down=...)
    link.start(clean_start=False, properties=connect_properties)
    ...
    link.close()

A lost connection is retried for ever, after 0.5, 1, 2, 4, 8 and then every 10 s (each
+-20 % so that the workers of a restarted broker do not all come back at once), each
attempt logged. A broker that refuses the credentials or a certificate that fails
verification will not get better by retrying: the link ends and `fatal` says why, in
one line.
"""
from __future__ import annotations

import logging
import os
import random
import re
import socket
import ssl
import threading
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MalformedPacket, Properties, VariableByteIntegers, writeBytes, writeUTF

from ..errors import WasinnError
from .schema import Mqtt, Tls

PASSWORD_ENV = "WASINN_MQTT_PASSWORD"
BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 10)
# CONNACK reasons that retrying cannot cure (MQTT 5): 0x86 bad user name or password,
# 0x87 not authorized, 0x8A banned, 0x8C bad authentication method, 0x84 unsupported
# protocol version, 0x85 client identifier not valid.
_NOT_AUTHORISED = {0x86, 0x87, 0x8A, 0x8C}
_FATAL = _NOT_AUTHORISED | {0x84, 0x85}
_SSL_REASON = re.compile(r"\[SSL: (\w+)\]")  # OpenSSL's reason, e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED
_ALERT_WAIT = 1.0  # seconds a TLS broker has to say why it dropped a connection (Link._listen_for_alert)
SESSION_TAKEN_OVER = 0x8E


_PUBLISH = Properties(PacketTypes.PUBLISH)  # paho's tables, read by the methods PublishProperties inherits


class PublishProperties(Properties):
    """A PUBLISH packet's content type, correlation data and user properties as paho's
    `Properties`, the same bytes on the wire, made and packed in ~2 us instead of ~20:
    paho's builds its name and type tables in each instance, and checks, stores and
    packs every property by scanning those tables by name, on the main thread's turn
    for every result."""
    types, names, properties = _PUBLISH.types, _PUBLISH.names, _PUBLISH.properties
    _FAST = frozenset(("packetType", "ContentType", "CorrelationData", "UserProperty"))

    def __init__(self, content_type: str | None = None, correlation: bytes | None = None,
                 user: list[tuple[str, str]] | None = None):
        setattr_ = object.__setattr__  # the values are of these properties' types: nothing for paho to check
        setattr_(self, "packetType", PacketTypes.PUBLISH)
        if content_type:
            setattr_(self, "ContentType", content_type)
        if correlation:
            setattr_(self, "CorrelationData", correlation)
        if user:
            setattr_(self, "UserProperty", list(user))

    def pack(self) -> bytes:
        held = self.__dict__
        if held.keys() - self._FAST:  # another property was set since (paho's checks): paho packs them all
            return super().pack()
        out = []  # in paho's order (its `names`): 3 content type, 9 correlation data, 38 user properties
        if "ContentType" in held:
            out += b"\x03", writeUTF(held["ContentType"])
        if "CorrelationData" in held:
            out += b"\x09", writeBytes(held["CorrelationData"])
        for key, value in held.get("UserProperty", ()):
            out += b"\x26", writeUTF(key), writeUTF(value)
        packed = b"".join(out)  # joined once (bytes +=, as paho's does, copied it all per property: 14 s
        return VariableByteIntegers.encode(len(packed)) + packed  # for 8,192 properties of 2 KB)


# A message's user properties past this many are not kept (`received_properties`): the
# worker sends such a message to dead letters. Each one kept costs ~15 us of the worker's
# turn (lowered into the operator and back, staged, ...): 65,536 of them, 800 KB from
# the sender, had held a worker ~1 s a message, and the messages behind it.
MAX_RECEIVED_USER_PROPERTIES = 4096


def received_properties(self: Properties, buffer) -> tuple[Properties, int]:
    """paho's `Properties.unpack` (what a received packet's properties hold), in one pass:
    paho's copies the rest of the packet at each property, quadratic in their number (a
    1.8 MB PUBLISH of 150,000 user properties held a worker's network thread for minutes,
    pinging nothing, so the broker dropped it, and sent the message again at the next
    connection). User properties past MAX_RECEIVED_USER_PROPERTIES are counted in
    `dropped_user_properties`, not kept. Installed over paho's by `install`."""
    self.clear()
    view = memoryview(buffer)
    length, at = VariableByteIntegers.decode(view)
    end = at + length
    if end > len(view):
        raise MalformedPacket("properties past the end of the packet")
    user, dropped = [], 0
    while at < end:
        identifier, n = VariableByteIntegers.decode(view[at:at + 4])
        at += n
        if identifier not in self.properties:
            raise MalformedPacket(f"no property {identifier}")
        kind = self.types[self.properties[identifier][0]]
        if kind == "UTF-8 String Pair":
            key, at = _utf8(view, at, end)
            value, at = _utf8(view, at, end)
            if identifier == _USER_PROPERTY:
                if len(user) < MAX_RECEIVED_USER_PROPERTIES:
                    user.append((key, value))
                else:
                    dropped += 1
                continue
            value = (key, value)
        elif kind == "UTF-8 Encoded String":
            value, at = _utf8(view, at, end)
        elif kind == "Binary Data":
            n = _length(view, at, end)
            value, at = bytes(view[at + 2:at + 2 + n]), at + 2 + n
        elif kind == "Variable Byte Integer":
            value, n = VariableByteIntegers.decode(view[at:end][:4])
            at += n
        else:  # Byte, Two or Four Byte Integer
            size = _FIXED[kind]
            if at + size > end:
                raise MalformedPacket("a property past the properties' end")
            value, at = int.from_bytes(view[at:at + size], "big"), at + size
        name = self.getNameFromIdent(identifier)
        compact = name.replace(" ", "")
        if not self.allowsMultiple(compact) and hasattr(self, compact):
            raise MalformedPacket(f"property {name!r} more than once")
        setattr(self, name, value)
    if user:
        object.__setattr__(self, "UserProperty", user)
    if dropped:
        object.__setattr__(self, "dropped_user_properties", dropped)
    return self, end


_USER_PROPERTY = 38
_FIXED = {"Byte": 1, "Two Byte Integer": 2, "Four Byte Integer": 4}


def _length(view: memoryview, at: int, end: int) -> int:
    n = int.from_bytes(view[at:at + 2], "big") if at + 2 <= end else end
    if at + 2 + n > end:
        raise MalformedPacket("a string or binary property past the properties' end")
    return n


def _utf8(view: memoryview, at: int, end: int) -> tuple[str, int]:
    """A UTF-8 string at `at` and where it ends, held to MQTT's rules as paho's `readUTF`."""
    n = _length(view, at, end)
    try:
        text = str(view[at + 2:at + 2 + n], "utf-8")  # strict: no surrogate decodes
    except UnicodeDecodeError as e:
        raise MalformedPacket(f"a string that is not UTF-8: {e}") from None
    if "\x00" in text:
        raise MalformedPacket("[MQTT-1.5.4-2] Null found in UTF-8 data")
    return text, at + 2 + n


# paho's own, for the tests that hold `received_properties` to it
PAHO_UNPACK = Properties.unpack


def install() -> None:
    """Received packets' properties are read by `received_properties` from now on."""
    Properties.unpack = received_properties


# The largest packet MQTT has (2.1.4: a remaining length of at most 268,435,455 bytes,
# after a fixed header of 5); a broker may take less (its CONNACK's Maximum Packet Size).
PROTOCOL_MAX_PACKET = 268_435_455 + 5


def publish_packet_size(topic: str, payload: bytes, properties: Properties | None) -> int:
    """The bytes of the QoS 1 PUBLISH packet that carries these (MQTT 5, 3.3): its fixed
    header, topic, packet id, properties and payload."""
    props = properties.pack() if properties is not None else b"\x00"
    remaining = 2 + len(topic.encode()) + 2 + len(props) + len(payload)
    # the length's own bytes (a variable byte integer), counted here: paho's encoder raises
    # past MQTT's largest packet, and a 205 MB message's dead letter (its payload in
    # base64) raised out of the worker at every resend
    return 1 + (1 if remaining < 1 << 7 else 2 if remaining < 1 << 14 else 3 if remaining < 1 << 21 else 4) + remaining


# The QoS 1 publishes paho keeps unacknowledged at most (its default); fewer where the
# broker's Receive Maximum says so (`honour_receive_maximum`).
PAHO_INFLIGHT = 20


def honour_receive_maximum(client: mqtt.Client, receive_maximum: int | None) -> None:
    """Holds `client` to the broker's Receive Maximum (its CONNACK's; absent: 65,535).
    MQTT 5 forbids a client more unacknowledged QoS 1 publishes than that (3.3.4; a broker
    that enforces it closes the connection, and paho, sending them all again on the next,
    would never get past it), while paho 2.1 keeps its own number (20) and refuses to
    change it on an open connection, which is when the broker says it: its field, set
    here and nowhere else (tests/pipeline/test_operator_hostile_output.py checks it)."""
    client._max_inflight_messages = min(PAHO_INFLIGHT, receive_maximum or 65_535)


def _pem(path, what: str) -> str:
    try:
        return path.read_bytes().decode("ascii", "replace")
    except OSError as e:
        raise WasinnError(f"mqtt.tls.{what} {path}: cannot read it: {e.strerror}") from None


def tls_context(tls: Tls) -> ssl.SSLContext:
    """The client side of TLS: the broker's certificate must chain to `tls.ca` (or the
    system's store) and name the broker's host; `tls.cert` is presented if given. Every
    problem with a file is one line naming it."""
    if tls.ca is None:
        ctx = ssl.create_default_context()
    else:
        if "-----BEGIN CERTIFICATE-----" not in _pem(tls.ca, "ca"):
            raise WasinnError(f"mqtt.tls.ca {tls.ca}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name; trusts the CA file only
        try:
            ctx.load_verify_locations(cafile=str(tls.ca))
        except ssl.SSLError as e:
            raise WasinnError(f"mqtt.tls.ca {tls.ca}: not a usable CA certificate: {e.reason or e}") from None
    if tls.cert is not None:
        if "-----BEGIN CERTIFICATE-----" not in _pem(tls.cert, "cert"):
            raise WasinnError(f"mqtt.tls.cert {tls.cert}: no PEM certificate in it "
                              "(expected -----BEGIN CERTIFICATE-----)")
        key = _pem(tls.key, "key")
        if "ENCRYPTED" in key:
            raise WasinnError(f"mqtt.tls.key {tls.key}: the key is encrypted; wasinn needs it unencrypted "
                              "(protect it with the file's permissions)")
        if "PRIVATE KEY-----" not in key:
            raise WasinnError(f"mqtt.tls.key {tls.key}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)")
        try:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        except ssl.SSLError as e:
            if e.reason == "KEY_VALUES_MISMATCH":
                raise WasinnError(f"mqtt.tls.key {tls.key}: this key does not belong to the certificate "
                                  f"{tls.cert}") from None
            raise WasinnError(f"mqtt.tls.cert {tls.cert}: cannot use it with the key {tls.key}: "
                              f"{e.reason or e}") from None
    return ctx


def password(m: Mqtt) -> str | None:
    """mqtt.passwordFile's first line (its trailing newline stripped, as secret files are
    written), else $WASINN_MQTT_PASSWORD; None without a username."""
    if m.username is None:
        return None
    if m.password_file is None:
        return os.environ.get(PASSWORD_ENV)
    try:
        text = m.password_file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise WasinnError(f"mqtt.passwordFile {m.password_file}: cannot read it: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise WasinnError(f"mqtt.passwordFile {m.password_file}: the file is empty")
    return secret


def check(m: Mqtt) -> None:
    """What can be checked without the broker: the TLS files and the password file."""
    if m.tls:
        tls_context(m.tls)
    password(m)


# How much lower than the process's other threads the network thread runs (nice). A
# publish from the main thread wakes it; at the same priority the kernel let it preempt
# the main thread on its core, and it held the GIL for its whole turn (the write, then
# the broker's PUBACK and the source message's acknowledgement): ~250 us in the middle
# of the main thread's message, about every other message (JSON map over MQTT, 2 cores).
# It does little, so it waits little.
NETWORK_NICE = 5


def _yield_to_others() -> None:
    """The calling thread NETWORK_NICE below the process (once per thread)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + NETWORK_NICE))
    except OSError:
        pass  # where the sandbox forbids it: the thread keeps its priority


def _backoff(attempt: int) -> float:
    return BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)] * random.uniform(0.8, 1.2)


class _ErrorsOnly(logging.Logger):
    """The errors a link's paho client logs (it does not raise from its own thread),
    for `Link._tls_reason`; a logger outside logging's tree, so nothing reaches stderr."""

    def __init__(self, link: "Link"):
        super().__init__(f"wasinn.mqtt.{link.client_id}", logging.ERROR)
        self.propagate = False
        self.link = link

    def handle(self, record: logging.LogRecord) -> None:
        self.link._paho_error(record.getMessage())


class Link:
    """One paho client kept connected to the pipeline's broker from a thread of its own.

    `on_up(client, session_present)` runs after each accepted CONNECT, `on_down(reason)`
    after each loss; both on the network thread. The link ends (`ended` set) when closed,
    when the broker refused us for good (`fatal` says why), or, with `take_back` off,
    when another client took the session over (`taken_over`)."""

    def __init__(self, m: Mqtt, client_id: str, log, *, on_up: Callable, on_down: Callable | None = None,
                 manual_ack: bool = False, take_back: bool = True, will: tuple[str, bytes, object] | None = None):
        self.mqtt, self.client_id, self.log = m, client_id, log
        self.on_up, self.on_down, self.take_back = on_up, on_down, take_back
        self.fatal: str | None = None
        self.taken_over = False
        self._accepted = False
        self.max_packet = PROTOCOL_MAX_PACKET  # what the broker takes (its CONNACK says)
        self._lost = ""
        self._tls_reason = ""  # OpenSSL's reason that paho logged (it does not raise from its own thread)
        self._down = threading.Event()
        self._acked: set[int] = set()  # our publishes the broker acknowledged before we asked
        self._then: dict[int, Callable[[], None]] = {}  # what to do when the broker acknowledges
        self._acks = threading.Lock()
        # The bytes of our publishes the broker has not acknowledged, by mid, and how many
        # `publish` lets wait at once (None: no bound): results published faster than they
        # go out (an operator returning 60 MiB a message) had queued 150 of them in paho,
        # 9.2 GB; publishing beyond the bound waits for acknowledgements, and with it the
        # worker's next message.
        self.max_unacked_bytes: int | None = None
        self._unacked: dict[int, int] = {}
        self._unacked_bytes = 0
        self._room = threading.Condition(self._acks)
        self.connected = threading.Event()
        self.ended = threading.Event()
        self._closing = threading.Event()
        install()  # what the broker sends is read in one pass
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                        manual_ack=manual_ack, reconnect_on_failure=False)
        self._tls = tls_context(m.tls) if m.tls else None
        if self._tls is not None:
            c.tls_set_context(self._tls)
        if m.username is not None:
            c.username_pw_set(m.username, password(m))
        if will:
            topic, payload, props = will
            c.will_set(topic, payload, qos=1, retain=True, properties=props)
        c.on_connect, c.on_disconnect, c.on_publish = self._on_connect, self._on_disconnect, self._on_publish
        # paho's errors through a logger of our own that wants nothing below them: with
        # `on_log`, paho formats every packet's debug line (its properties included) first,
        # ~20 us per publish on the main thread and more on the network thread.
        c.enable_logger(_ErrorsOnly(self))
        # Results and acknowledgements are small packets: without TCP_NODELAY, Nagle's
        # algorithm holds each one back behind the last unacknowledged segment (measured:
        # ~15 ms per message on loopback, half the throughput).
        c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = c
        self._thread: threading.Thread | None = None

    def start(self, *, clean_start: bool, properties) -> None:
        self._thread = threading.Thread(target=self._run, args=(clean_start, properties),
                                        name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def _run(self, clean_start: bool, properties) -> None:
        m, attempt = self.mqtt, 0
        try:
            while not self._closing.is_set():
                self._lost = "the broker closed the connection before accepting it"
                self._tls_reason = ""
                self._accepted = False
                try:
                    self.client.connect(m.host, m.port, keepalive=m.keepalive, clean_start=clean_start,
                                        properties=properties)
                except ssl.SSLCertVerificationError as e:
                    ca = f"mqtt.tls.ca {m.tls.ca}" if m.tls.ca else "the system's CA store"
                    return self._refuse(f"TLS: the certificate of the broker at {m.address} failed verification "
                                        f"against {ca}: {e.verify_message}")
                except ssl.SSLError as e:
                    if self._tls_refused(e.reason or ""):
                        return
                    attempt = self._wait(attempt, f"TLS: {e.reason or e}")
                    continue
                except (OSError, ValueError) as e:
                    attempt = self._wait(attempt, getattr(e, "strerror", None) or str(e) or type(e).__name__)
                    continue
                # paho's own network thread, not this one: only with it does paho hand other
                # threads' publishes to the network thread instead of writing from theirs
                # (two threads in one TLS connection at once hang it). With reconnect_on_failure
                # off, that thread ends with the connection.
                self._down.clear()
                self.client.loop_start()
                network = self.client._thread  # paho does not call on_disconnect if a write fails
                while not self._down.wait(0.5) and network is not None and network.is_alive():  # before CONNACK
                    pass
                self.client.loop_stop()
                # TLS 1.3: the broker checks a client certificate after the handshake, and
                # its refusal comes as an alert on the first read (paho only logs it), or
                # is lost where paho's CONNECT met the broker's reset first
                if not self._accepted and self._tls is not None and not self._tls_reason:
                    self._tls_reason = self._listen_for_alert()
                if not self._accepted and self._tls_refused(self._tls_reason):
                    return
                if self.fatal or self.taken_over or self._closing.is_set():
                    return
                attempt = self._wait(0 if self._accepted else attempt, self._lost)
        finally:
            self.connected.clear()
            self.ended.set()

    def _wait(self, attempt: int, error: str) -> int:
        delay = _backoff(attempt)
        self.log.warning("reconnecting", broker=self.mqtt.address, attempt=attempt + 1, in_s=round(delay, 2),
                         error=error)
        self._closing.wait(delay)
        return attempt + 1

    def _listen_for_alert(self) -> str:
        """What the broker says, if anything, to a TLS client that sends nothing after the
        handshake: a broker that refuses our certificate (or the lack of one) sends its
        alert, where paho's own connection, which wrote its CONNECT at once, may have met
        the reset that follows it instead (a loaded machine). One connection, at most
        `_ALERT_WAIT` seconds, only after a TLS connection ended before CONNACK unexplained."""
        m = self.mqtt
        try:
            with socket.create_connection((m.host, m.port), timeout=_ALERT_WAIT) as raw, \
                    self._tls.wrap_socket(raw, server_hostname=m.host) as s:
                s.recv(1)
        except ssl.SSLError as e:
            return e.reason or str(e)
        except OSError:
            pass
        return ""

    def _tls_refused(self, reason: str) -> bool:
        """A TLS alert from the broker or a plain-TCP port: retrying will not help."""
        m = self.mqtt
        if "ALERT" not in reason and "WRONG_VERSION_NUMBER" not in reason:
            return False
        hint = (" (is that port TLS?)" if "WRONG_VERSION_NUMBER" in reason else
                f" (the broker refused the client certificate mqtt.tls.cert {m.tls.cert})" if m.tls.cert else
                " (does the broker want a client certificate? mqtt.tls.cert)")
        self._refuse(f"TLS with the broker at {m.address} failed: {reason}{hint}")
        return True

    def _paho_error(self, message: str) -> None:
        found = _SSL_REASON.search(message)
        if found:  # kept over what paho logs after it ("Client is not connected")
            self._tls_reason = found.group(1)

    def _refuse(self, reason: str) -> None:
        self.fatal = reason
        self.log.error("not-authorised" if "not authorised" in reason else "connection-refused", message=reason)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        _yield_to_others()  # on the network thread (a new one per connection)
        self._accepted = not reason_code.is_failure
        self.max_packet = getattr(properties, "MaximumPacketSize", None) or PROTOCOL_MAX_PACKET
        honour_receive_maximum(client, getattr(properties, "ReceiveMaximum", None))
        if reason_code.is_failure:
            if reason_code.value in _FATAL:
                who = f"user {self.mqtt.username!r}" if self.mqtt.username else "anonymous clients"
                what = "not authorised" if reason_code.value in _NOT_AUTHORISED else "refused"
                self._refuse(f"the broker at {self.mqtt.address} refused {who} (client id {self.client_id}): "
                              f"{what} ({reason_code})")
            else:
                self.log.warning("connect-refused", broker=self.mqtt.address, reason=str(reason_code))
            client.disconnect()
            return
        self.connected.set()
        self.log.info("connected", broker=self.mqtt.address, session_present=bool(flags.session_present))
        self.on_up(client, bool(flags.session_present))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._lost = f"connection lost: {reason_code}"
        if reason_code.value == SESSION_TAKEN_OVER and not self.take_back:
            self.taken_over = True  # another process holds the session now: leave it to it
        if was and self.on_down:
            self.on_down(reason_code)
        self._down.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:  # e.g. the broker's ACL: what was sent is not there
            self.log.error("publish-refused", mid=mid, reason=str(reason_code))
        with self._acks:
            then = self._then.pop(mid, None)
            if then is None:
                self._acked.add(mid)
            n = self._unacked.pop(mid, 0)
            if n:
                self._unacked_bytes -= n
                self._room.notify_all()
        if then is not None:
            then()

    def _when_acknowledged(self, mid: int, then: Callable[[], None]) -> None:
        with self._acks:
            now = mid in self._acked
            if now:
                self._acked.discard(mid)
            else:
                self._then[mid] = then
        if now:
            then()

    def publish_retained(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publishes a retained QoS 1 message without waiting for it (callable from callbacks)."""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        self._when_acknowledged(info.mid, lambda: None)  # nobody waits for it: keep its mid out of _acked
        return info

    def too_large(self, topic: str, payload: bytes, properties) -> str | None:
        """Why the broker would not take this publication, or None: a packet over the
        Maximum Packet Size it gave makes it drop the connection, and paho, sending the
        publication again on every reconnect, would never get past it."""
        n = publish_packet_size(topic, payload, properties)
        if n <= self.max_packet:
            return None
        return (f"it is {n} bytes as an MQTT packet; the broker at {self.mqtt.address} takes at most "
                f"{self.max_packet} (its Maximum Packet Size)")

    def publish(self, topic: str, payload: bytes, properties, then: Callable[[], None], wait: bool = True) -> None:
        """Publishes at QoS 1; `then()` runs once the broker has acknowledged it (on the
        network thread, or in this one if that came first), never if the link ends before.
        Across lost connections paho sends it again (marked as a duplicate) on the next one,
        so one whose acknowledgement was lost reaches the broker twice. With `wait`, where
        the publishes not yet acknowledged hold `max_unacked_bytes` with this one, it first
        waits until they do not (or the link ends); one alone always goes."""
        n = len(payload)
        with self._acks:
            while (wait and self.max_unacked_bytes is not None and self._unacked_bytes
                   and self._unacked_bytes + n > self.max_unacked_bytes and not self.ended.is_set()):
                self._room.wait(0.2)
        # (paho's MQTTMessageInfo cannot wait for a message published while disconnected)
        mid = self.client.publish(topic, payload, qos=1, properties=properties).mid
        with self._acks:
            if mid not in self._acked:  # (acknowledged already: nothing left to count)
                self._unacked[mid] = n
                self._unacked_bytes += n
        self._when_acknowledged(mid, then)

    def close(self, properties=None, timeout: float = 10) -> None:
        self._closing.set()
        self.client.disconnect(properties=properties)
        if self._thread:
            self._thread.join(timeout)
