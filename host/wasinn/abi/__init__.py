"""How guests reach wasi:nn: value conversion, host-owned guest memory, the bulk path, introspection glue."""
