"""`wasinn fuzz` finds planted marshalling bugs, shrinks each to a minimal tensor, and
raises no false alarm on correct guests; it counts each call once, and `--inputs-for`
aims at what a model accepts. Guests: guest/fuzz-py (componentize-py, the bulk path)
and guest/fuzz-c (C, the standard path), wit/fuzz.wit, and guest/fuzz-model (its own
WIT: exports that feed a registered model); built with the wasinn pytest plugin's
`wasinn_build` fixture and guest_builds."""
from __future__ import annotations

import subprocess
import json
import sys

import onnx
import pytest
from hypothesis import settings
from hypothesis.stateful import rule
from onnx import TensorProto, helper

from support.repo import CACHE, ROOT
from wasinn import Host
from wasinn.testing import ComponentMachine, tensors
from wasinn.cli.fuzz import DEFAULT_EXAMPLES
from wasinn.testing.fuzz import fuzz

SEED = 2


# (guest, export, the shrunk counterexample: exact, or its start where the bytes may vary)
PLANTED = [
    ("py", "echo-swapped-fp32", "counterexample: FP32 dims=[] byte "),
    ("py", "echo-lost-zero-axis", "counterexample: FP32 dims=[0] dims differ: sent [0], got []"),
    ("py", "echo-threshold", "counterexample: FP32 dims=[16384] length differs: sent 65536 bytes, got 65535"),
    ("py", "echo-wrong-tag", "counterexample: BF16 dims=[0] type differs: sent BF16, got FP16"),
    ("py", "echo-many-dropping", "counterexample: list<tensor> of 3 [FP32 dims=[], FP32 dims=[], FP32 dims=[]] "
                                 "length differs: sent 3, got 2"),
    ("c", "echo-swapped-i64", "counterexample: I64 dims=[] byte "),
    ("c", "echo-bytes-threshold", "counterexample: list<u8> of 4096 bytes length differs: sent 4096 bytes, got 4095"),
]


# A seeded run in a process of its own, as `wasinn fuzz` runs: hypothesis mixes constants
# from the source of every local module a process has imported into what it draws, and a
# test process has imported the whole suite (its constants once kept echo-swapped-fp32 at
# a 64-element tensor: the one bad element was the last, and dims are drawn first).
FUZZ_CHILD = """
import json, sys
import wasinn
from wasinn.testing.fuzz import fuzz
host = wasinn.Host(cache_dir=sys.argv[1])
report = fuzz(host, host.load_component(sys.argv[2]), sys.argv[3], roundtrip=True, examples=int(sys.argv[4]),
              seed=int(sys.argv[5]))
print(json.dumps({"findings": [[f.line, bool(f.blob)] for f in report.findings], "calls": report.calls,
                  "outcomes": dict(report.outcomes)}))
"""


def fuzz_in_a_process(wasm, export: str):
    proc = subprocess.run([sys.executable, "-c", FUZZ_CHILD, str(CACHE), str(wasm), export,
                           str(DEFAULT_EXAMPLES), str(SEED)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("guest, export, want", PLANTED, ids=[f"{g}-{e}" for g, e, _ in PLANTED])
def test_each_planted_bug_is_found_and_shrunk_to_a_minimal_tensor(py_wasm, c_wasm, guest, export, want):
    report = fuzz_in_a_process({"py": py_wasm, "c": c_wasm}[guest], export)

    def minimal(line: str) -> str:
        # hypothesis's shrinker may stop at a zero-element tensor or at a one-element one
        # with the value zero: both are the smallest tensor of their type, unless the bug is
        # about zero-sized axes themselves
        return line if export == "echo-lost-zero-axis" else line.replace("dims=[0]", "dims=[]")
    assert [line for line, _ in report["findings"] if not minimal(line).startswith(minimal(want))] == []
    assert len(report["findings"]) == 1 and report["findings"][0][1]
    if want.endswith(" byte "):  # a byte-order slip: one element, some byte differs
        assert " (element 0) differs: sent 0x" in report["findings"][0][0]
    assert report["outcomes"]["ok"] > 0
    assert sum(report["outcomes"].values()) == report["calls"]  # each call counted once, shrinking's too


@pytest.mark.parametrize("guest, export, examples", [("py", "echo", 600), ("py", "echo-many", 200),
                                                     ("c", "echo", 600), ("c", "echo-bytes", 600)])
def test_correct_guests_pass_a_long_run_with_no_finding(wasinn_host, guests, guest, export, examples):
    report = fuzz(wasinn_host, guests[guest], export, roundtrip=True, examples=examples, seed=SEED)
    assert report.findings == [] and report.outcomes == {"ok": report.calls}
    assert report.calls >= examples * 0.9


def wasinn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True, timeout=300)


def test_the_command_reports_counts_a_counterexample_and_a_reproducer_that_replays_it(py_wasm):
    cache = ["--cache-dir", str(ROOT / ".cache" / "tests")]
    run = wasinn("fuzz", str(py_wasm), "--export", "echo-lost-zero-axis", "--roundtrip", "--seed", "3", *cache)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("fuzzed echo-lost-zero-axis: func(t: tensor) -> tensor: ")
    assert "mismatch: dims " in lines[1] and "ok " in lines[1]
    assert lines[2] == "counterexample: FP32 dims=[0] dims differ: sent [0], got []"
    assert lines[3].startswith(f"reproduce: wasinn fuzz {py_wasm} --export echo-lost-zero-axis --roundtrip --replay ")
    replay = wasinn(*lines[3].split()[2:], *cache)
    assert replay.returncode == 1 and replay.stdout.splitlines()[2] == lines[2]
    assert "1 call, " in replay.stdout.splitlines()[0]

    clean = wasinn("fuzz", str(py_wasm), "--export", "echo", "--roundtrip", "--examples", "50", *cache)
    assert clean.returncode == 0 and clean.stdout.splitlines()[1].strip() == "ok 50", clean.stdout + clean.stderr


@pytest.mark.parametrize("args, message", [
    (["--export", "nope"], "the component exports no function 'nope'"),
    (["--export", "echo-many", "--examples", "1"], None),
])
def test_usage_failures_exit_2_with_one_line(py_wasm, args, message):
    run = wasinn("fuzz", str(py_wasm), *args, "--cache-dir", str(ROOT / ".cache" / "tests"))
    if message is None:  # no --roundtrip: a plain run on a correct export
        assert run.returncode == 0, run.stderr
        return
    assert run.returncode == 2 and message in run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("wasinn: error:")] != []


def test_unreadable_component_exits_2(tmp_path):
    run = wasinn("fuzz", str(tmp_path / "missing.wasm"), "--export", "echo")
    assert run.returncode == 2 and run.stderr.strip().startswith("wasinn: error: cannot read component")


def test_roundtrip_refuses_an_export_that_does_not_return_what_it_takes(wasinn_host):
    from support.repo import guest_component
    component = wasinn_host.load_component(guest_component("roundtrip"))
    from wasinn.errors import WasinnError
    with pytest.raises(WasinnError, match="--roundtrip needs an export that returns what it takes; make is"):
        fuzz(wasinn_host, component, "make", roundtrip=True, examples=1)


def test_without_hypothesis_the_command_names_the_extra(py_wasm):
    code = ("import sys; sys.modules['hypothesis'] = None; from wasinn.cli import main; "
            f"sys.exit(main(['fuzz', {str(py_wasm)!r}, '--export', 'echo']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "wasinn: error: wasinn fuzz needs the Python package hypothesis: " \
                                 "pip install 'wasinn[testing]'"


class FuzzGuestMachine(ComponentMachine):
    """The state machine base on the fuzz guest: its own rule calls the correct exports
    with drawn values, and a rule of ours checks one property."""
    exports = ["echo", "echo-many"]

    @rule(t=tensors(thresholds=()))
    def echo_returns_its_input(self, t):
        out = self.call("echo", t)
        assert (out.ty, out.dims, out.to_bytes()) == (t.ty, t.dims, t.to_bytes())


def test_the_state_machine_base_runs_a_subclass(py_wasm):
    FuzzGuestMachine.component = py_wasm
    FuzzGuestMachine.TestCase.settings = settings(FuzzGuestMachine.TestCase.settings, max_examples=10,
                                                  stateful_step_count=10)
    FuzzGuestMachine.TestCase().runTest()


# --- counting, and --inputs-for on exports that feed a model -------------------------
@pytest.fixture(scope="module")
def model_fed_wasm(wasinn_build):
    return wasinn_build(ROOT / "guest" / "fuzz-model", wit=ROOT / "guest" / "fuzz-model" / "wit",
                        world="example:model-fed/model-fed")


@pytest.fixture(scope="module")
def relu4(tmp_path_factory):
    """The model the issue's export fed: input `x`, FP32 [batch, 4] (batch dynamic)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu4", [x], [y])
    path = tmp_path_factory.mktemp("relu4") / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def model_host(relu4):
    host = Host(cache_dir=CACHE)
    host.models.register_spec(f"model={relu4}")
    return host


def test_each_call_is_counted_once_err_results_apart_from_ok(model_host, model_fed_wasm):
    report = fuzz(model_host, model_host.load_component(model_fed_wasm), "infer", examples=60, seed=SEED)
    assert report.findings == [] and sum(report.outcomes.values()) == report.calls
    assert report.outcomes["err result"] > 0 and report.outcomes["err result"] + report.outcomes["ok"] == report.calls


@pytest.mark.parametrize("export", ["infer", "infer-named"])
def test_inputs_for_draws_what_the_model_accepts(model_host, model_fed_wasm, relu4, export):
    component = model_host.load_component(model_fed_wasm)
    report = fuzz(model_host, component, export, examples=60, seed=SEED, model=relu4)
    assert report.findings == [] and report.outcomes == {"ok": report.calls} and report.calls >= 54


def test_the_command_takes_inputs_for_a_registered_model_or_a_file(model_fed_wasm, relu4):
    common = [str(model_fed_wasm), "--model", f"model={relu4}", "--examples", "40", "--cache-dir", str(CACHE)]
    blind = wasinn("fuzz", *common, "--export", "infer")
    assert blind.returncode == 0 and blind.stdout.splitlines()[1].strip() == "err result 40", blind.stdout
    for spec in ("model", str(relu4)):
        aimed = wasinn("fuzz", *common, "--export", "infer-named", "--inputs-for", spec)
        assert aimed.returncode == 0 and aimed.stdout.splitlines()[1].strip() == "ok 40", aimed.stdout + aimed.stderr
    wrong = wasinn("fuzz", *common, "--export", "infer", "--inputs-for", "nope")
    assert wrong.returncode == 2 and wrong.stderr.strip() == \
        "wasinn: error: --inputs-for nope: no --model of that name and no such model file (registered: model)"


def test_hypothesis_local_constants_hook():
    """wasinn.testing.fuzz hides wasinn's own modules from hypothesis' local-constant
    scan through `providers._seen_modules` (a set of module ids): if hypothesis renames or
    reshapes it, this fails and fuzz's `_hide_wasinn_constants` must follow."""
    from hypothesis.internal.conjecture import providers
    assert isinstance(providers._seen_modules, set), "hypothesis changed _seen_modules: see testing/fuzz.py"
    assert callable(providers._get_local_constants), "hypothesis changed its local-constant scan"

