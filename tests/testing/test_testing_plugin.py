"""wasinn's pytest plugin (wasinn/testing/plugin.py), run in child pytest sessions
(pytester): per-example instances are torn down as each example ends and memory stays
flat; wasinn_instance under @given fails at setup instead of piling instances up;
hypothesis's function-scoped-fixture check is left on; wasinn_build takes wit= and world=."""
from __future__ import annotations

import json

import pytest

from support.repo import CACHE, ROOT
from wasinn import Host
from wasinn.errors import WasinnError

pytest_plugins = ["pytester"]

# Peak RSS may grow this much over a child's examples: a leaked instance of the
# componentize-py guest costs ~14 MiB, so 100 examples would add ~1.4 GiB.
RSS_GROWTH_BOUND_MIB = 64


@pytest.fixture(scope="module")
def echo_wasm(wasinn_build):
    return wasinn_build(ROOT / "guest" / "fuzz-py", world="wasinn:guest/fuzz-guest")


def run_child(pytester, source: str, *args: str):
    pytester.makepyfile(test_child=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--wasinn-cache-dir={CACHE}", *args,
                                         timeout=600)


COUNTING = '''
import json, pathlib, resource
from hypothesis import given, settings
from wasinn import TensorType
from wasinn.runtime import Host
from wasinn.testing import tensors

made, peaks, live_before = [], [], []
_instantiate = Host.instantiate


def counting(self, *args, **kwargs):
    made.append(_instantiate(self, *args, **kwargs))
    return made[-1]


Host.instantiate = counting
'''


def test_per_example_instances_are_torn_down_as_each_example_ends_in_flat_memory(pytester, echo_wasm):
    examples = 100
    run = run_child(pytester, COUNTING + f'''

@settings(max_examples={examples}, database=None)
@given(t=tensors(ty=TensorType.FP32, dims=[4]))
def test_echo(wasinn_instance_per_example, t):
    live_before.append(sum(i._store is not None for i in made))  # what earlier examples left running
    inst = wasinn_instance_per_example({str(echo_wasm)!r})
    assert inst.call("echo", t).to_bytes() == t.to_bytes()
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def test_report():
    pathlib.Path("counts.json").write_text(json.dumps(dict(
        examples=len(peaks), started=sum(i.instances_started for i in made), most_live_before=max(live_before),
        live_at_end=sum(i._store is not None for i in made), peaks_kib=peaks)))
''')
    run.assert_outcomes(passed=2)
    counts = json.loads((pytester.path / "counts.json").read_text())
    assert counts["examples"] == counts["started"] == examples
    assert (counts["most_live_before"], counts["live_at_end"]) == (0, 0)
    peaks = counts["peaks_kib"]
    assert (peaks[-1] - peaks[9]) / 1024 < RSS_GROWTH_BOUND_MIB, f"peak RSS {peaks[9] // 1024} MiB at example " \
        f"10, {peaks[-1] // 1024} MiB at {examples}"


def test_wasinn_instance_under_given_fails_at_setup_with_one_line(pytester, echo_wasm):
    run = run_child(pytester, f'''
from hypothesis import given, HealthCheck, settings, strategies as st


@given(n=st.integers())
def test_leaky(wasinn_instance, n):
    wasinn_instance({str(echo_wasm)!r})


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # silencing hypothesis does not help
@given(n=st.integers())
def test_leaky_silenced(wasinn_instance, n):
    wasinn_instance({str(echo_wasm)!r})
''')
    run.assert_outcomes(errors=2)
    want = "wasinn_instance is torn down after the test, not after each @given example, so every example's " \
           "instance would stay alive: take wasinn_instance_per_example"
    # each error's own line; with CI set, pytest's short summary repeats them untruncated
    assert len([line for line in run.outlines if line.endswith(want)]) in (2, 4), run.stdout.str()


def test_hypothesis_function_scoped_fixture_check_is_left_on(pytester):
    run = run_child(pytester, '''
import pytest
from hypothesis import given, strategies as st


@pytest.fixture
def per_test():
    return []


@given(n=st.integers())
def test_shared(per_test, n):
    pass
''')
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*FailedHealthCheck*uses a function-scoped fixture 'per_test'*"])


def test_wasinn_instance_in_a_plain_test_is_torn_down_after_it_and_per_example_outside_given_fails(
        pytester, echo_wasm):
    run = run_child(pytester, COUNTING + f'''
from wasinn import HostTensor


def test_plain(wasinn_instance):
    inst = wasinn_instance({str(echo_wasm)!r})
    assert inst.call("echo", HostTensor([1], TensorType.U8, b"x")).to_bytes() == b"x"


def test_after():
    assert [i.instances_started for i in made] == [1] and made[0]._store is None


def test_outside_given(wasinn_instance_per_example):
    wasinn_instance_per_example({str(echo_wasm)!r})
''')
    run.assert_outcomes(passed=2, failed=1)
    run.stdout.fnmatch_lines(["*WasinnError: wasinn_instance_per_example makes instances for @given examples "
                              "(each torn down when its example ends); outside @given take wasinn_instance"])


def test_wasinn_build_takes_the_users_wit_file_and_world(wasinn_build):
    wasm = wasinn_build(ROOT / "guest" / "adder-lib", wit=ROOT / "guest" / "adder-lib" / "adder.wit",
                        world="example:adder/adder")
    host = Host(cache_dir=CACHE)
    host.models.register_spec(f"adder={ROOT / 'models' / 'adder' / 'model.onnx'}")
    with host.instantiate(host.load_component(wasm)) as inst:
        assert inst.call("add", [1.0, 2.0], [10.0, 20.0]).payload == [11.0, 22.0]


def test_wasinn_build_without_a_world_builds_the_one_the_wit_declares(wasinn_build):
    # as `wasinn build --wit` does, and the same component as naming it
    wit = ROOT / "guest" / "adder-lib" / "adder.wit"
    assert wasinn_build(ROOT / "guest" / "adder-lib", wit=wit) == \
        wasinn_build(ROOT / "guest" / "adder-lib", wit=wit, world="example:adder/adder")


def test_wasinn_build_takes_a_wit_directory(wasinn_build):
    wasm = wasinn_build(ROOT / "guest" / "fuzz-model", wit=ROOT / "guest" / "fuzz-model" / "wit",
                        world="example:model-fed/model-fed")
    host = Host(cache_dir=CACHE)
    with host.instantiate(host.load_component(wasm)) as inst:
        assert [n for n, _ in inst.signature("infer")[0]] == ["x"]


def test_wasinn_build_names_a_missing_wit(wasinn_build, tmp_path):
    with pytest.raises(WasinnError, match=r"^wasinn_build\(wit='.*nope.wit'\): no such file or directory; give "):
        wasinn_build(ROOT / "guest" / "adder-lib", wit=tmp_path / "nope.wit", world="example:adder/adder")
