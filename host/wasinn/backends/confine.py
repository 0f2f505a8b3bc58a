"""What a backend worker gives up before it reads a guest's model: files, privileges,
process creation, network, memory past its cap.

Applied in the worker (worker.py) right after it is forked, in this order: resource
limits, capabilities (a worker started as root keeps none), no_new_privs, Landlock (the filesystem: read
only the interpreter, the packages and the system libraries the backends load lazily;
read-write only the worker's private directory), seccomp (no exec, no new processes,
no sockets, no ptrace, no mounts). Each step is the kernel's where it has it: `features()`
says which this kernel gives (`wasinn doctor` prints it), and a worker on a kernel
without one still runs, with an empty working directory and its other limits.

Only ctypes and the standard library: this runs in a process that is about to parse
hostile bytes, and must not depend on anything that could be missing.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
import sys
from typing import Iterable

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# Landlock's syscalls have the same numbers on every architecture.
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
# Filesystem rights by the ABI version that introduced them.
_FS_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAPSET = {"x86_64": 126, "aarch64": 91}

# seccomp: syscalls a worker never needs, by architecture (audit arch, numbers).
_CLONE_THREAD = 0x10000
_ARCHES = {
    "x86_64": (0xC000003E, {
        "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "socket": 41, "socketpair": 53,
        "connect": 42, "bind": 49, "listen": 50, "accept": 43, "accept4": 288, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298, "keyctl": 250,
        "add_key": 248, "request_key": 249, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "kexec_load": 246, "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168,
        "acct": 163, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "personality": 135, "setuid": 105, "setgid": 106, "setreuid": 113,
        "setregid": 114, "setresuid": 117, "setresgid": 119, "setgroups": 116, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "tkill": 200, "rt_sigqueueinfo": 129,
        "rt_tgsigqueueinfo": 297,
    }, {"clone": 56, "clone3": 435, "kill": 62, "tgkill": 234}),
    "aarch64": (0xC00000B7, {
        "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199, "connect": 203, "bind": 200,
        "listen": 201, "accept": 202, "accept4": 242, "ptrace": 117, "process_vm_readv": 270,
        "process_vm_writev": 271, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
        "setns": 268, "bpf": 280, "perf_event_open": 241, "keyctl": 219, "add_key": 217, "request_key": 218,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
        "kexec_file_load": 294, "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "userfaultfd": 282,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "personality": 92,
        "setuid": 146, "setgid": 144, "setreuid": 145, "setregid": 143, "setresuid": 147, "setresgid": 149,
        "setgroups": 159, "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "tkill": 130,
        "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
    }, {"clone": 220, "clone3": 435, "kill": 129, "tgkill": 131}),
}


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is disabled)."""
    version = _libc.syscall(_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, version)


def seccomp_available() -> bool:
    return platform.machine() in _ARCHES and os.path.exists("/proc/self/status")


def features() -> dict[str, str]:
    """What confinement this kernel and process give a backend worker (for `wasinn doctor`)."""
    abi = landlock_abi()
    return {
        "landlock": f"ABI {abi}" + (" (signals and abstract sockets scoped)" if abi >= 6 else "") if abi
                    else "not available: workers keep an empty working directory, but can read files",
        "seccomp": "available" if seccomp_available() else f"not on {platform.machine()}",
        "privileges": "root: workers drop every capability" if os.geteuid() == 0 else "workers run as this user, "
                      "with no capabilities",
        "memory cap": "RLIMIT_AS",
    }


def limit_resources(address_space: int | None, hard_address_space: int | None, file_size: int) -> None:
    """Caps the worker's memory (virtual: what it can map), the files it may write (its
    spill of a large model), its open files, and core dumps."""
    if address_space is not None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, hard_address_space or address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), min(256, hard)))


def set_address_space(address_space: int) -> None:
    """A worker's own soft cap, as its live graphs allow (raised to load one, lowered
    when one goes), never past the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (min(address_space, hard) if hard >= 0 else address_space, hard))


def address_space_cap() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def drop_capabilities() -> None:
    """A worker started as root keeps uid 0 (the interpreter may live where only root
    can read, as pyenv's under /root does) but holds no capability: no overriding file
    permissions or Landlock, no signals to other users' processes, no raw network, no
    ptrace, no mounts, for itself or anything it could still start."""
    if os.geteuid() != 0:
        return  # no capabilities to drop
    for cap in range(64):
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last one: nothing to drop
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # effective, permitted, inheritable: two 32-bit words each, all empty
    if _libc.syscall(_CAPSET[platform.machine()], ctypes.c_char_p(header), ctypes.c_char_p(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def die_with_parent() -> None:
    """Set after the credentials change, which clears it."""
    import signal
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def readable_paths() -> list[str]:
    """What a backend may still need to open after lock-down: the interpreter and every
    package directory on sys.path (lazy imports, plugins such as OpenVINO's CPU plugin),
    the system libraries, the loader's cache, and what CPU and cgroup probes read."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(__file__)),
             "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo", "/etc/ld.so.cache",
             "/proc/cpuinfo", "/proc/meminfo", "/proc/self", "/sys/devices/system", "/sys/fs/cgroup",
             "/dev/null", "/dev/urandom", "/dev/zero"}
    paths.update(p for p in sys.path if p and os.path.isdir(p) and _inside_interpreter(p))
    return sorted(p for p in paths if os.path.exists(p))


def gpu_devices() -> list[str]:
    """The device files a worker running a `gpu` graph opens (CUDA's, through onnxruntime's
    CUDA provider; the fork server never initialises CUDA, so each worker can)."""
    import glob
    return sorted(glob.glob("/dev/nvidia*")) + [d for d in ("/dev/dri",) if os.path.isdir(d)]


def _inside_interpreter(path: str) -> bool:
    """sys.path entries under the interpreter's prefixes (site-packages), not the
    directory the host was started from or an editable checkout's parent."""
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(p) + os.sep) for p in {sys.prefix, sys.base_prefix})


def landlock(read: Iterable[str], write: Iterable[str]) -> int:
    """Restricts this process (and threads it starts later) to reading `read` and
    writing inside `write`; with ABI 4+ no TCP, with ABI 6+ no signals to processes
    outside the worker and no abstract sockets. Returns the ABI used (0: none)."""
    abi = landlock_abi()
    if not abi:
        return 0
    fs = _FS_RIGHTS[max(v for v in _FS_RIGHTS if v <= abi)]
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    buf = ctypes.create_string_buffer(attr[:size], size)
    ruleset = _libc.syscall(_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for paths, rights in ((read, _READ & fs), (write, fs)):
            for path in paths:
                _add_rule(ruleset, path, rights)
        no_new_privs()
        if _libc.syscall(_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _add_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # gone since it was listed: nothing to allow
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
        if _libc.syscall(_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                         attr, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JSET_K, _BPF_RET_K, _BPF_JGE_K = 0x20, 0x15, 0x45, 0x06, 0x35
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000


def seccomp() -> bool:
    """Denies (EPERM) what no backend needs and an attacker would: running programs,
    new processes (threads stay allowed; clone3 answers ENOSYS so that libc falls back
    to clone, whose flags a filter can read), sockets, ptrace and reading other
    processes' memory, mounts and namespaces, kernel modules, credential changes, and
    signals to any process but itself.
    False where this architecture has no table here."""
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        return False
    audit_arch, denied, clones = arch
    deny = _RET_ERRNO | errno.EPERM
    prog = [(_BPF_LD_W_ABS, 0, 0, 4),                           # seccomp_data.arch
            (_BPF_JEQ_K, 1, 0, audit_arch),
            (_BPF_RET_K, 0, 0, _RET_KILL_PROCESS),              # another ABI (x32, compat): no
            (_BPF_LD_W_ABS, 0, 0, 0)]                           # seccomp_data.nr
    if platform.machine() == "x86_64":
        prog.append((_BPF_JGE_K, 0, 1, 0x40000000))             # x32 numbers on x86-64
        prog.append((_BPF_RET_K, 0, 0, deny))
    prog += [(_BPF_JEQ_K, 0, 1, clones["clone3"]), (_BPF_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    for nr in sorted(set(denied.values())):
        prog += [(_BPF_JEQ_K, 0, 1, nr), (_BPF_RET_K, 0, 0, deny)]
    pid = os.getpid()
    for name in ("kill", "tgkill"):  # signals only to itself (abort() is tgkill(own pid, ...))
        prog += [(_BPF_JEQ_K, 0, 4, clones[name]),
                 (_BPF_LD_W_ABS, 0, 0, 16),                      # args[0], low word: the pid
                 (_BPF_JEQ_K, 1, 0, pid),
                 (_BPF_RET_K, 0, 0, deny),
                 (_BPF_RET_K, 0, 0, _RET_ALLOW)]
    prog += [(_BPF_JEQ_K, 0, 3, clones["clone"]),
             (_BPF_LD_W_ABS, 0, 0, 16),                          # args[0], low word: clone's flags
             (_BPF_JSET_K, 1, 0, _CLONE_THREAD),
             (_BPF_RET_K, 0, 0, deny),
             (_BPF_RET_K, 0, 0, _RET_ALLOW)]
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    no_new_privs()
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    return True
