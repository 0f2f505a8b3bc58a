import sys
pass
def test_x(wasinn_host, guests):
    from wasinn.testing.fuzz import fuzz
    from wasinn.cli.fuzz import DEFAULT_EXAMPLES
    r = fuzz(wasinn_host, guests["py"], "echo-swapped-fp32", roundtrip=True, examples=DEFAULT_EXAMPLES, seed=2)
    print("REPORT", dict(r.outcomes), [f.line for f in r.findings], r.seconds, file=sys.stderr)
