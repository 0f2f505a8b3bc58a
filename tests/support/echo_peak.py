"""`python echo_peak.py CACHE_DIR COMPONENT`: how much a fresh process's peak memory
(VmHWM) grows, per payload byte, while COMPONENT's `echo` returns a 20 MB tensor twice.
Run by tests/abi/test_standard_path.py (a bound) and benchmarks/bench.py (a row)."""
import sys

import numpy as np

import wasinn


def hwm() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) << 10


host = wasinn.Host(cache_dir=sys.argv[1])
inst = host.instantiate(host.load_component(sys.argv[2]))
inst.call("echo", np.zeros(16, np.uint8))
x = np.ones(20 << 20, np.uint8)
before = hwm()
for _ in range(2):
    out = inst.call("echo", x)
print((hwm() - before) / x.nbytes)
