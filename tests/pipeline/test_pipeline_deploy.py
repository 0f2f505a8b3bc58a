"""deploy/wasinn-serve.service and deploy/Containerfile: both parse, their `wasinn serve`
command lines are valid for wasinn's own parser, and they run with the same settings."""
from __future__ import annotations

import configparser
import json
import pathlib
import re
import shlex
import tempfile
import time

from wasinn.cli import parser

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "wasinn-serve.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"))
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def containerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments (continuation lines joined), each instruction once per entry."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def serve_args(argv: list[str]):
    args = parser().parse_args(argv)
    assert args.command == "serve"
    return args


def test_the_systemd_unit_runs_a_valid_serve_command():
    u = unit()
    assert set(u.sections()) == {"Unit", "Service", "Install"}
    s = u["Service"]
    argv = shlex.split(s["ExecStart"])
    assert argv[0] == f"{s['WorkingDirectory']}/.venv/bin/wasinn"
    args = serve_args(argv[1:])
    # secrets and the cache come from systemd's own directories
    assert s["LoadCredential"].startswith("mqtt-password:")
    assert args.password_file == "${CREDENTIALS_DIRECTORY}/mqtt-password"
    assert args.cache_dir == "${CACHE_DIRECTORY}" and s["CacheDirectory"] == "wasinn"
    assert args.node == "%H"
    # it may drain before systemd kills it; errors are not restarted in a loop
    assert s["KillSignal"] == "SIGTERM" and float(s["TimeoutStopSec"]) > args.drain_timeout
    assert s["Restart"] == "on-abnormal"
    assert "network-online.target" in u["Unit"]["After"]


def test_the_containerfile_runs_a_valid_serve_command():
    c = containerfile()
    [entry], [cmd] = c["ENTRYPOINT"], c["CMD"]
    argv = json.loads(entry) + json.loads(cmd)
    assert argv[:2] == ["/opt/wasinn/.venv/bin/wasinn", "serve"]
    args = serve_args(argv[1:])
    assert args.password_file == "/run/secrets/mqtt-password"  # a podman/docker secret
    assert c["VOLUME"] == [args.cache_dir]
    assert c["STOPSIGNAL"] == ["SIGTERM"] and c["USER"] == ["wasinn"]
    assert c["EXPOSE"] == [str(args.metrics_port)]
    [health] = c["HEALTHCHECK"]
    assert f"http://127.0.0.1:{args.metrics_port}/healthz" in health
    stop = re.search(r"--stop-timeout (\d+)", CONTAINERFILE.read_text())
    assert stop and int(stop.group(1)) > args.drain_timeout


def test_both_run_with_the_same_settings():
    s = unit()["Service"]
    a = serve_args(shlex.split(s["ExecStart"])[1:])
    c = containerfile()
    b = serve_args((json.loads(c["ENTRYPOINT"][0]) + json.loads(c["CMD"][0]))[1:])
    same = ("workers", "drain_timeout", "metrics_port", "log_level", "ort_threads", "broker", "tls_ca", "username")
    assert {k: getattr(a, k) for k in same} == {k: getattr(b, k) for k in same}
    assert pathlib.Path(a.pipeline).name == pathlib.Path(b.pipeline).name == "pipeline.yaml"
    assert pathlib.Path(a.password_file).name == pathlib.Path(b.password_file).name == "mqtt-password"
    # the container must listen beyond its own loopback to be scraped; the host service need not
    assert (a.metrics_host, b.metrics_host) == ("127.0.0.1", "0.0.0.0")


def test_the_shipped_secure_mosquitto_config_runs(tmp_path):
    """pipelines/mosquitto-secure.conf, its paths pointed at the test's files and its port at
    a free loopback one: mosquitto starts, takes the password over TLS and refuses plain
    anonymous access."""
    import ssl
    import subprocess

    import paho.mqtt.client as mqtt

    from support.pipeline_certs import Certificates, give_to_mosquitto, password_file
    from support.pipeline_service import _free_port, mosquitto_binary

    # (not under tmp_path: pytest's directories are closed to the mosquitto user)
    holder = tempfile.TemporaryDirectory(prefix="wasinn-mosquitto-")
    d = pathlib.Path(holder.name)
    d.chmod(0o755)
    certs = Certificates(tmp_path / "certs")
    port = _free_port()
    text = "".join(line for line in (ROOT / "pipelines" / "mosquitto-secure.conf").read_text().splitlines(True)
                   if not line.lstrip().startswith("#"))
    for name, source in (("ca.crt", certs.ca), ("server.crt", certs.server_cert), ("server.key", certs.server_key)):
        (d / name).write_bytes(source.read_bytes())
        give_to_mosquitto(d / name)
        text = text.replace(f"/etc/mosquitto/certs/{name}", str(d / name))
    (d / "data").mkdir()
    give_to_mosquitto(d / "data")
    text = (text.replace("/etc/mosquitto/passwd", str(password_file(d / "passwd", {"cam-7": "pw"})))
            .replace("/var/lib/mosquitto/", f"{d / 'data'}/").replace("listener 8883 0.0.0.0", f"listener {port} 127.0.0.1"))
    assert "/etc/" not in text and "/var/" not in text
    (d / "mosquitto.conf").write_text(text)
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(d / "mosquitto.conf")], stderr=subprocess.PIPE)
    try:
        def connect(tls: bool, user) -> str:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            got = []
            c.on_connect = lambda cl, u, f, rc, p: got.append(str(rc))
            if tls:
                c.tls_set_context(ssl.create_default_context(cafile=str(certs.ca)))
            if user:
                c.username_pw_set(*user)
            for _ in range(100):
                try:
                    c.connect("127.0.0.1", port)
                    break
                except ConnectionRefusedError:
                    assert proc.poll() is None, proc.stderr.read().decode()
                    time.sleep(0.05)
            for _ in range(30):
                if got or c.loop(0.1) != 0:
                    break
            c.disconnect()
            return got[0] if got else "no CONNACK"

        assert connect(True, ("cam-7", "pw")) == "Success"
        assert connect(True, ("cam-7", "wrong")) == "Not authorized"
        assert connect(False, None) == "no CONNACK"  # TLS only
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        holder.cleanup()
