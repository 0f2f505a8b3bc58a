"""sha256 for the caches' keys, without hashlib's OpenSSL.

`import hashlib` loads libcrypto: 3.3 MB of a `wasinn classify` process's peak RSS and
~2.5 ms, for the digests of a few short strings and small files per run (file
identities, the adapter's and the guest shim's sources). CPython's own sha256 serves
them; it is ~4x slower on large inputs (18 MB: ~60 ms vs ~16 ms), which are hashed only
when a cache misses, next to seconds of compiling.
"""
try:
    from _sha2 import sha256  # CPython 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:  # an interpreter built without its own hashes
        from hashlib import sha256

__all__ = ["sha256"]
