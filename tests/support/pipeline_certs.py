"""A throw-away CA, a broker certificate and a client certificate, made with openssl, and a
mosquitto password file made with mosquitto_passwd, for the pipeline tests.

    certs = Certificates(tmp_dir, addresses=["127.0.0.1", "10.251.1.1"])
    certs.ca, certs.server_cert, certs.server_key, certs.client_cert, certs.client_key
    users = password_file(tmp_dir / "passwd", {"cam": "s3cret"})

Keys are EC P-256 (fast to make: the whole set takes ~50 ms). The broker's copies must
be readable by the mosquitto user, which mosquitto drops to after reading its
configuration as root (pipeline_service.Broker copies them into its own directory).
"""
from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess


def _run(*cmd: str, cwd: pathlib.Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


def give_to_mosquitto(*paths: pathlib.Path) -> None:
    """As root, mosquitto reads its files after dropping to its own user: hand them over."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


class Certificates:
    def __init__(self, directory: pathlib.Path, addresses: list[str] = ("127.0.0.1",), days: int = 2):
        if not shutil.which("openssl"):
            raise RuntimeError("openssl is not installed: run scripts/setup.sh (it runs scripts/setup-mqtt.sh)")
        self.dir = d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = d / "ca.crt", d / "ca.key"
        self.server_cert, self.server_key = d / "server.crt", d / "server.key"
        self.client_cert, self.client_key = d / "client.crt", d / "client.key"
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
             "-subj", "/CN=wasinn test CA", cwd=d)
        san = ",".join([f"IP:{a}" for a in addresses] + ["DNS:localhost"])
        (d / "server.ext").write_text(f"subjectAltName={san}\n")
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, ext in (("server", "server.ext"), ("client", "client.ext")):
            _run("openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                 cwd=d)
            _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days), "-extfile", ext, cwd=d)
        for path in d.iterdir():
            path.chmod(0o600 if path.suffix == ".key" else 0o644)


def password_file(path: pathlib.Path, users: dict[str, str]) -> pathlib.Path:
    """A mosquitto password file (hashed) for `users` (name -> password)."""
    tool = shutil.which("mosquitto_passwd")
    if not tool:
        raise RuntimeError("mosquitto_passwd is not installed: run scripts/setup.sh (it runs scripts/setup-mqtt.sh)")
    path.write_text("")
    for name, secret in users.items():
        _run(tool, "-b", str(path), name, secret, cwd=path.parent)
    path.chmod(0o600)
    give_to_mosquitto(path)
    return path
