"""sha256 for the caches' keys, without hashlib's OpenSSL where it is not worth loading.

`import hashlib` loads libcrypto: 3.3 MB of a `wasinn classify` process's peak RSS and
~2.5 ms, for the digests of a few short strings and small files per run (file
identities, the adapter's and the guest shim's sources). CPython's own sha256 serves
those. From a MiB on, OpenSSL's: ~4x faster (18 MB: ~16 ms vs ~60 ms), and it hashes
without the GIL, where CPython's holds it throughout (a 400 MB component's key held
every other thread of the host 1.4 s).
"""
try:
    from _sha2 import sha256 as _own  # CPython 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256 as _own  # CPython 3.11
    except ImportError:  # an interpreter built without its own hashes
        from hashlib import sha256 as _own

__all__ = ["sha256"]

_LARGE = 1 << 20


def sha256(data: bytes = b""):
    """A sha256 hash object of `data` (more with its `update`)."""
    if len(data) >= _LARGE:
        import hashlib
        return hashlib.sha256(data)
    return _own(data)
