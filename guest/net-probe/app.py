"""A command that tries the network and reads its environment, for the tests of what a
guest can reach (tests/cli/test_peer_cli.py): argv[1] is a TCP port on 127.0.0.1 that
the test listens on; each attempt prints one line."""
import os
import socket
import sys

from wit_world import exports


class Run(exports.Run):
    def run(self) -> None:
        port = int(sys.argv[1])
        attempts = {
            "tcp": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", port)),
            "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", port)),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                print(f"{name}: connected", flush=True)
            except OSError as e:
                print(f"{name}: {type(e).__name__}", flush=True)
        print(f"env: {os.environ.get('WASINN_PROBE_VALUE', '-')}", flush=True)
