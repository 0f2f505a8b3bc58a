"""Values at the WIT boundary, as a user passes them on their first day: `wasinn run
--invoke` and `Instance.call` check every argument against the export's WIT type and
say what is wrong in one line (the parameter, the path inside it, the type, the value),
take tensors as `tensor(...)` / numpy arrays, and print results as wasmtime does.
guest/values exports one function per kind of WIT value (values.wit)."""
from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from wasmtime.component import Record, Variant

import wasinn
from support.repo import CACHE, ROOT, guest_component
from wasinn.cli import main

ADDER = ROOT / "models" / "adder" / "model.onnx"


@pytest.fixture(scope="module")
def values_wasm() -> pathlib.Path:
    from wasinn import build
    return build.build_cached(build.guest_files(ROOT / "guest" / "values"), name="values",
                              world="example:values/values", wit="values.wit", cache_dir=CACHE, progress=print)


@pytest.fixture(scope="module")
def values(values_wasm):
    host = wasinn.Host(cache_dir=CACHE)
    host.models.register("adder", str(ADDER))
    with host.instantiate(host.load_component(values_wasm)) as inst:
        yield inst


def invoke(capsys, call: str, wasm, *flags: str) -> tuple[int, str, str]:
    """`wasinn run --invoke CALL WASM` in this process: (status, stdout, stderr's last line)."""
    status = main(["run", "--cache-dir", str(CACHE), *flags, "--invoke", call, str(wasm)])
    out, err = capsys.readouterr()
    return status, out.strip(), (err.strip().splitlines() or [""])[-1]


# --- Instance.call: wrong values, one line each -----------------------------------------
ENUM = "enum {red, green, blue}"
SHAPE = "variant {circle(f32), square(u32), dot}"
POINT = "record {x: s16, y: s16, label: option<string>}"


@pytest.mark.parametrize("export, args, message", [
    ("echo-bool", [1], "parameter 'v': expected bool, got 1"),
    ("echo-s8", [128], "parameter 'v': expected s8, got 128, out of its range (integers -128..127)"),
    ("echo-s8", [True], "parameter 'v': expected s8, got true"),
    ("echo-u16", [1.0], "parameter 'v': expected u16, got 1.0"),
    ("echo-u16", [-1], "parameter 'v': expected u16, got -1, out of its range (integers 0..65535)"),
    ("echo-s64", [2**63], "parameter 'v': expected s64, got 9223372036854775808, out of its range "
                          "(integers -9223372036854775808..9223372036854775807)"),
    ("echo-f32", ["1.5"], "parameter 'v': expected f32, got \"1.5\""),
    ("echo-f32", [1e39], "parameter 'v': expected f32, got 1e+39, out of its range "
                         "(numbers up to 3.4028235e+38 in magnitude, nan, inf, -inf)"),
    ("echo-f64", [None], "parameter 'v': expected f64, got none"),
    ("echo-char", ["xy"], "parameter 'v': expected char, got \"xy\""),
    ("echo-string", [b"abc"], "parameter 'v': expected string, got [97, 98, 99]"),
    ("echo-bytes", ["abc"], "parameter 'v': expected list<u8>, got \"abc\""),
    ("echo-bytes", [[1, 256]], "parameter 'v'[1]: expected u8, got 256, out of its range (integers 0..255)"),
    ("echo-color", ["pink"], f"parameter 'v': expected {ENUM}, got \"pink\""),
    ("echo-perms", [{"read", "fly"}], "parameter 'v': expected flags {read, write, exec}, got {fly, read}"),
    ("echo-perms", ["read"], "parameter 'v': expected flags {read, write, exec}, got \"read\""),
    ("echo-shape", [Variant("hexagon", 1)], f"parameter 'v': expected {SHAPE}, got hexagon(1)"),
    ("echo-shape", [Variant("square", -1)], "parameter 'v'.square: expected u32, got -1, out of its range "
                                            "(integers 0..4294967295)"),
    ("echo-shape", [Variant("dot", 1)], f"parameter 'v': expected {SHAPE}, got dot(1) (case dot has no payload)"),
    ("echo-shape", ["circle"], f"parameter 'v': expected {SHAPE}, got \"circle\" (case circle needs a payload, f32)"),
    ("echo-option", ["x"], "parameter 'v'.some: expected u32, got \"x\""),
    ("echo-result", [3], "parameter 'v': expected result<u32, string>, got 3"),
    ("echo-result", ["ok"], "parameter 'v': expected result<u32, string>, got \"ok\" (case ok needs a payload, u32)"),
    ("echo-result", [Variant("ok", "x")], "parameter 'v'.ok: expected u32, got \"x\""),
    ("echo-points", [[{"x": 1, "y": 2, "label": None}, {"x": 1, "y": 40000, "label": None}]],
     "parameter 'v'[1].y: expected s16, got 40000, out of its range (integers -32768..32767)"),
    ("echo-points", [[{"x": 1, "y": 2, "label": 3}]], "parameter 'v'[0].label.some: expected string, got 3"),
    ("echo-points", [[{"x": 1, "y": 2}]], f"parameter 'v'[0]: expected {POINT}, got {{'x': 1, 'y': 2}} "
                                          "(no field label)"),
    ("echo-points", [[{"x": 1, "y": 2, "label": None, "z": 0}]],
     f"parameter 'v'[0]: expected {POINT}, got {{'x': 1, 'y': 2, 'label': None, 'z': 0}} (it has no field z)"),
    ("echo-points", [(1, 2, None)], f"parameter 'v'[0]: expected {POINT}, got 1"),
    ("echo-pair", [("a", 1, 2)], "parameter 'v': expected tuple<string, u8>, got (\"a\", 1, 2) (3 elements, not 2)"),
    ("echo-pair", [(1, 1)], "parameter 'v'.0: expected string, got 1"),
    ("score-list", ["abc"], "parameter 'v': expected list<f32>, got \"abc\""),
    ("score-list", [[1.0, None]], "parameter 'v'[1]: expected f32, got none"),
    ("normalize", [[1.0, 2.0, 3.0]], "parameter 't': expected tensor, got [1.0, 2.0, 3.0]; pass "
                                     "np.asarray(value, np.float32) (in --invoke: tensor(FP32, [3], [1.0, 2.0, 3.0]))"),
    ("normalize", [[[1, 2], [3, 4]]], "parameter 't': expected tensor, got [[1, 2], [3, 4]]; pass "
                                      "np.asarray(value, np.int64) (in --invoke: tensor(I64, [2, 2], [1, 2, 3, 4]))"),
    ("normalize", ["x"], "parameter 't': expected tensor, got \"x\"; a tensor is a numpy array or a HostTensor"),
    ("normalize", [[True]], "parameter 't': expected tensor, got [true]; a tensor is a numpy array or a HostTensor"),
    ("normalize", [[[1.0], [1.0, 2.0]]], "parameter 't': expected tensor, got [[1.0], [1.0, 2.0]]; a tensor is a "
                                         "numpy array or a HostTensor"),
    ("normalize", [np.ones(2, bool)], "parameter 't': expected tensor, got a numpy array of bool [2]: numpy dtype "
                                      "bool has no wasi:nn tensor type; one of float16 (FP16), float32 (FP32), "
                                      "float64 (FP64), bfloat16 (BF16), uint8 (U8), int32 (I32), int64 (I64)"),
    ("total", [[1.5]], "parameter 't': expected borrow<tensor>, got [1.5]; pass np.asarray(value, np.float32) "
                       "(in --invoke: tensor(FP32, [1], [1.5]))"),
    ("forget", [3], "parameter 'g': expected graph, got 3; only a handle of this type an earlier call returned fits"),
    ("echo-s8", [1, 2], "echo-s8 takes 1 argument (v), got 2"),
    ("echo-pair", [], "echo-pair takes 1 argument (v), got 0"),
])
def test_a_wrong_value_is_one_line_naming_the_parameter_type_and_value(values, export, args, message):
    with pytest.raises(wasinn.BadValue) as e:
        values.call(export, *args)
    assert str(e.value) == message
    assert values.call("echo-u16", 7) == 7 and values.instances_started == 1  # not a trap: the instance lives


@pytest.mark.parametrize("export, given, back", [
    ("echo-bool", np.True_, True),
    ("echo-s8", np.int64(-128), -128),
    ("echo-u16", 65535, 65535),
    ("echo-s64", -2**63, -2**63),
    ("echo-f32", 1, 1.0),
    ("echo-f32", np.float32(0.5), 0.5),
    ("echo-f64", -math.inf, -math.inf),
    ("echo-char", "é", "é"),
    ("echo-bytes", [1, 2, 255], b"\x01\x02\xff"),
    ("echo-bytes", b"\x00", b"\x00"),
    ("echo-color", "blue", "blue"),
    ("echo-perms", ["exec", "read"], {"read", "exec"}),
    ("echo-shape", "dot", Variant("dot")),
    ("echo-shape", Variant("circle", 2), Variant("circle", 2.0)),
    ("echo-option", None, None),
    ("echo-option", 3, 3),
    ("echo-result", Variant("err", "no"), Variant("err", "no")),
    ("score-list", [1, 2, 3, 4], 2.5),  # ints where floats go: WAVE writes 1 for 1.0 too
    ("echo-pair", ["a", 1], ("a", 1)),
    ("score-list", np.array([1.0, 3.0], np.float32), 2.0),
])
def test_right_values_in_the_shapes_people_have(values, export, given, back):
    assert values.call(export, given) == back


def test_a_wrong_argument_leaves_no_tensor_behind(roundtrip):
    with pytest.raises(wasinn.BadValue, match=r"^parameter 'inputs'\[1\]\.1: expected tensor, got \"x\"; a tensor is"):
        roundtrip.call("compute-tensors", 1, [("a", np.ones(2, np.float32)), ("b", "x")])
    assert roundtrip.live_resources()["tensor"] == 0


def test_records_as_records_or_dicts_and_not_changed_in_place(values):
    record = Record()
    record.x, record.y, record.label = 1, -2, "p"
    [got] = values.call("echo-points", [record])
    assert vars(got) == {"x": 1, "y": -2, "label": "p"} and vars(record)["label"] == "p"
    [got] = values.call("echo-points", [{"x": 3, "y": 4, "label": None}])
    assert vars(got) == {"x": 3, "y": 4, "label": None}


def test_tensors_in_and_out_and_their_repr(values):
    out = values.call("normalize", np.array([1.0, 1.0, 2.0], np.float32))
    assert isinstance(out, wasinn.HostTensor) and out.dims == (3,) and out.ty == wasinn.TensorType.FP32
    assert out.array().tolist() == [0.25, 0.25, 0.5]
    assert repr(out) == "<HostTensor tensor(FP32, [3], [0.25, 0.25, 0.5])>"
    assert values.call("total", wasinn.HostTensor.from_array(np.arange(4, dtype=np.float32))) == 6.0
    long = wasinn.HostTensor.from_array(np.arange(10, dtype=np.int64).reshape(2, 5))
    assert repr(long) == "<HostTensor tensor(I64, [2, 5], [0, 1, 2, 3, 4, 5, 6, 7, ...])>"
    broken = wasinn.HostTensor((2, 2), wasinn.TensorType.FP32, b"abc")
    assert repr(broken) == "<HostTensor tensor(FP32, [2, 2], <3 bytes, not the 16 these dims need>)>"


def test_graphs_and_errors_in_results_say_what_they_are_and_go_back_in(values):
    graph = values.call("load-graph", "adder")
    assert graph.tag == "ok" and repr(graph.payload) == "<wasi:nn graph>"
    assert values.live_resources()["graph"] == 1
    values.call("forget", graph.payload)
    assert values.live_resources()["graph"] == 0
    err = values.call("load-graph", "nope")
    assert err.tag == "err"
    assert repr(err.payload) == "<wasi:nn error not-found: no graph named 'nope'; registered: 'adder'>"
    with pytest.raises(wasinn.BadValue, match=r"^parameter 'g': expected graph, got <wasi:nn error not-found: "):
        values.call("forget", err.payload)


# --- wasinn run --invoke ------------------------------------------------------------
def test_the_first_day_issue_cases_are_one_line_and_exit_2(capsys, values_wasm):
    for call, message in [
        ("normalize([1.0, 2.0, 3.0])", "parameter 't': expected tensor, got [1.0, 2.0, 3.0]; pass np.asarray(value, "
                                       "np.float32) (in --invoke: tensor(FP32, [3], [1.0, 2.0, 3.0]))"),
        ('score-list("abc")', "parameter 'v': expected list<f32>, got \"abc\""),
        ("echo-points([{x: 1, y: 2, label: some(3)}])", "parameter 'v'[0].label.some: expected string, got 3"),
        ("echo-perms({read, fly})", "parameter 'v': expected flags {read, write, exec}, got {fly, read}"),
        ("echo-f32(1e400)", "parameter 'v': 1e400 is past every float type's range; write inf for infinity"),
        ("echo-s8(1, 2)", "echo-s8 takes 1 argument (v), got 2"),
        ("echo-shape(circle(1, 2))", "parameter 'v': circle(...) takes one payload, got 2"),
        ("echo-s8(1", "--invoke wants NAME(ARGS...), e.g. 'add(1, 2)'; got 'echo-s8(1'"),
        ("echo-s8(1 2)", "--invoke: expected ',' or the end, got '2'"),
        # escapes WAVE has not (a JSON decoder's traceback before), and characters Unicode has not
        (r'echo-string("\q")', r"parameter 'v': \q is not an escape WAVE has; it has \\ \" \' \t \n \r and \u{hex}"),
        (r"echo-char('\u{d800}')", r"parameter 'v': \u{d800} is not a Unicode scalar value"),
        (r'echo-string("\u{110000}")', r"parameter 'v': \u{110000} is not a Unicode scalar value"),
        # nested past any type (Python's RecursionError traceback before)
        ("score-list(" + "[" * 1000 + "]" * 1000 + ")", "--invoke: the arguments nest more than 200 deep"),
    ]:
        assert invoke(capsys, call, values_wasm) == (2, "", f"wasinn: error: {message}"), call
    assert invoke(capsys, "score-list([1, 2, 3, 4])", values_wasm) == (0, "2.5", "")


@pytest.mark.parametrize("call, printed", [
    ("echo-color(green)", "green"),
    ("echo-char('x')", "'x'"),
    (r"echo-char('\'')", r"'\''"),
    (r'echo-string("tab\t\u{48}\u{1F600}\"q\'\\")', '"tab\\tH\U0001F600\\"q\'\\\\"'),
    ("echo-option(some(3))", "some(3)"),
    ("echo-option(none)", "none"),
    ("echo-perms({exec, read})", "{read, exec}"),
    ("echo-perms({})", "{}"),
    ("echo-shape(dot)", "dot"),
    ("echo-shape(circle(1.5))", "circle(1.5)"),
    ("echo-points([{x: 1, y: -2, label: some(\"a\")}])", '[{x: 1, y: -2, label: some("a")}]'),
    ("echo-pair((\"a\", 255))", '("a", 255)'),
    ("echo-f64(nan)", "nan"),
    ("echo-bytes([0, 255])", "[0, 255]"),
    ("normalize(tensor(FP32, [2, 2], [1, 1, 1, 1]))", "tensor(FP32, [2, 2], [0.25, 0.25, 0.25, 0.25])"),
    ("normalize(tensor(FP32, [1, 10], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]))",
     "tensor(FP32, [1, 10], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, ...])"),
    ("total(tensor(FP32, [2], [1.5, 2.5]))", "4.0"),
    ('load-graph("adder")', "ok(<wasi:nn graph>)"),
])
def test_invoke_prints_results_as_wasmtime_does(capsys, values_wasm, call, printed):
    assert invoke(capsys, call, values_wasm, "--model", f"adder={ADDER}")[:2] == (0, printed)


@pytest.mark.parametrize("literal, printed", [
    ("tensor(FP16, [2], [0.5, -inf])", "tensor(FP16, [2], [0.5, -inf])"),
    ("tensor(FP32, [2, 2], [1.0, 2.0, 3.0, 4.0])", "tensor(FP32, [2, 2], [1.0, 2.0, 3.0, 4.0])"),
    ("tensor(FP64, [1], [1e300])", "tensor(FP64, [1], [1e+300])"),
    ("tensor(BF16, [2], [1.5, nan])", "tensor(BF16, [2], [1.5, nan])"),
    ("tensor(U8, [3], [0, 1, 255])", "tensor(U8, [3], [0, 1, 255])"),
    ("tensor(I32, [1], [-2147483648])", "tensor(I32, [1], [-2147483648])"),
    ("tensor(i64, [0], [])", "tensor(I64, [0], [])"),
    ('tensor("a.npy")', "tensor(I32, [3, 4], [0, 1, 2, 3, 4, 5, 6, 7, ...])"),
])
def test_tensor_literals_of_every_type_go_in_and_come_back(capsys, monkeypatch, tmp_path, literal, printed):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.int32).reshape(3, 4))
    monkeypatch.chdir(tmp_path)  # a .npy path is relative to the working directory
    roundtrip = guest_component("roundtrip")
    assert invoke(capsys, f"echo({literal})", roundtrip)[:2] == (0, printed)
    inspected = invoke(capsys, f"inspect({literal})", roundtrip)  # borrow<tensor>
    assert inspected[0] == 0 and inspected[1].startswith("{dimensions: ")


@pytest.mark.parametrize("literal, message", [
    ("tensor(FP99, [2], [1.0, 2.0])", "tensor(FP99, [2], [1.0, 2.0]): no tensor type FP99; wasi:nn's are FP16, "
                                      "FP32, FP64, BF16, U8, I32, I64"),
    ("tensor(FP32, [2, 2], [1.0, 2.0, 3.0])", "tensor(FP32, [2, 2], [1.0, 2.0, 3.0]): dims [2, 2] hold 4 values, "
                                              "got 3"),
    ("tensor(U8, [2], [1, 256])", "tensor(U8, [2], [1, 256]): value [1] is 256; U8 takes integers 0..255"),
    ("tensor(I64, [1], [9223372036854775808])", "tensor(I64, [1], [9223372036854775808]): value [0] is "
     "9223372036854775808; I64 takes integers -9223372036854775808..9223372036854775807"),
    ("tensor(I32, [1], [1.5])", "tensor(I32, [1], [1.5]): value [0] is 1.5; I32 takes integers "
                                "-2147483648..2147483647"),
    ("tensor(FP16, [1], [70000])", "tensor(FP16, [1], [70000]): value [0] is 70000; FP16 takes numbers up to "
                                   "65504 in magnitude, nan, inf, -inf"),
    ('tensor(FP32, [1], ["a"])', 'tensor(FP32, [1], ["a"]): value [0] is \'a\'; FP32 takes numbers up to '
                                 '3.4028235e+38 in magnitude, nan, inf, -inf'),
    ("tensor(FP32, [-1], [])", "tensor(FP32, [-1], []): dims must be a list of integers 0..4294967295, got [-1]"),
    ("tensor(FP32, [2])", "tensor(FP32, [2]): expected ',', got ')'"),
    ('tensor("missing.npy")', 'tensor("missing.npy"): cannot read missing.npy: No such file or directory'),
    ('tensor("c.npy")', 'tensor("c.npy"): numpy dtype complex64 has no wasi:nn tensor type; one of float16 (FP16), '
                        'float32 (FP32), float64 (FP64), bfloat16 (BF16), uint8 (U8), int32 (I32), int64 (I64)'),
    ('tensor("text.npy")', 'tensor("text.npy"): text.npy is not a .npy file of numbers (what np.save writes; '
                           'no pickled objects)'),
    ('tensor("z.npz")', 'tensor("z.npz"): z.npz is a .npz archive of several arrays; save the one to pass with '
                        'np.save'),
])
def test_tensor_literal_mistakes_are_one_line(capsys, monkeypatch, tmp_path, literal, message):
    np.save(tmp_path / "c.npy", np.ones(2, np.complex64))
    np.savez(tmp_path / "z.npz", a=np.ones(2))
    (tmp_path / "text.npy").write_text("1, 2, 3\n")
    monkeypatch.chdir(tmp_path)
    assert invoke(capsys, f"echo({literal})", guest_component("roundtrip")) == (
        2, "", f"wasinn: error: parameter 't': {message}")


def test_a_tensor_nested_in_a_list_is_named_by_its_path(capsys, values_wasm):
    roundtrip = guest_component("roundtrip")
    status, _, line = invoke(capsys, 'compute-tensors(1, [("a", tensor(U8, [1], [1])), ("b", tensor(U8, [1], '
                                     '[-1]))])', roundtrip)
    assert (status, line) == (2, "wasinn: error: parameter 'inputs'[1].1: tensor(U8, [1], [-1]): value [0] is -1; "
                                 "U8 takes integers 0..255")


def test_the_exit_status_of_a_process(values_wasm):
    """The statuses as a shell sees them: 2 for a value typed wrong, 1 for err, 0 for ok."""
    def run(call):
        return subprocess.run([sys.executable, "-m", "wasinn", "run", "--cache-dir", str(CACHE), "--invoke", call,
                               str(values_wasm)], capture_output=True, text=True, timeout=120)
    wrong, err, ok = run("echo-u16(-1)"), run('echo-result(err("no"))'), run("echo-result(ok(1))")
    assert (wrong.returncode, wrong.stderr.splitlines()[-1]) == (
        2, "wasinn: error: parameter 'v': expected u16, got -1, out of its range (integers 0..65535)")
    assert (err.returncode, err.stdout, ok.returncode, ok.stdout) == (1, 'err("no")\n', 0, "ok(1)\n")


# An export returning `n` bytes of the character `c` and then an "é", from its memory.
LONG_STRING = """
(component
  (core module $m
    (memory (export "memory") 64)
    (func (export "s") (param $n i32) (param $c i32) (result i32)
      (memory.fill (i32.const 64) (local.get $c) (local.get $n))
      (i32.store8 (i32.add (i32.const 64) (local.get $n)) (i32.const 0xC3))
      (i32.store8 (i32.add (i32.const 65) (local.get $n)) (i32.const 0xA9))
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.add (local.get $n) (i32.const 2)))
      (i32.const 0)))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (func (export "s") (param "n" u32) (param "c" u32) (result string) (canon lift (core func $i "s") (memory $mem)))
)
"""


def test_invoke_prints_a_long_result_a_piece_at_a_time(capsys, tmp_path):
    # a 16 MiB string of control characters, escaped whole and then rebuilt character by
    # character, held the GIL 1.1 s and the host at 1 GB (probe 64); now in pieces
    import json

    import wasmtime

    from wasinn.abi.values import _PIECE, format_value, value_pieces
    wasm = tmp_path / "long.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(LONG_STRING))
    status, out, _ = invoke(capsys, "s(200000, 1)", wasm)
    assert status == 0 and out == json.dumps("\x01" * 200_000 + "é", ensure_ascii=False)
    text = "\x01" * 200_000 + "\ud800"  # a lone surrogate (no guest's string has one) takes JSON's escape
    assert "".join(value_pieces(text)) == json.dumps(text)
    assert max(len(piece) for piece in value_pieces(text)) <= 6 * _PIECE
    data = bytes(range(256)) * 600
    assert format_value(data) == "[" + ", ".join(map(str, data)) + "]"
    assert max(len(piece) for piece in value_pieces(data)) <= 5 * _PIECE  # "255, " a byte


# An export returning option<option<u32>>: `outer` and `inner` its two cases (0 none, 1 some), 7 inside.
NESTED_OPTION = """
(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "o") (param $outer i32) (param $inner i32) (result i32)
      (i32.store8 (i32.const 16) (local.get $outer))
      (i32.store8 (i32.const 20) (local.get $inner))
      (i32.store (i32.const 24) (i32.const 7))
      (i32.const 16)))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (func (export "o") (param "outer" u32) (param "inner" u32) (result (option (option u32)))
    (canon lift (core func $i "o") (memory $mem)))
)
"""


@pytest.mark.parametrize("call, printed", [("o(0, 0)", "none"), ("o(1, 0)", "some(none)"), ("o(1, 1)", "some(some(7))")])
def test_invoke_prints_an_option_of_an_option_as_wasmtime_does(capsys, tmp_path, call, printed):
    import wasmtime
    wasm = tmp_path / "nested.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(NESTED_OPTION))
    assert invoke(capsys, call, wasm)[:2] == (0, printed)


# An export returning `n` bytes of 255 from its memory, as list<u8>.
LONG_BYTES = """
(component
  (core module $m
    (memory (export "memory") 64)
    (func (export "b") (param $n i32) (result i32)
      (memory.fill (i32.const 64) (i32.const 255) (local.get $n))
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (local.get $n))
      (i32.const 0)))
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (func (export "b") (param "n" u32) (result (list u8)) (canon lift (core func $i "b") (memory $mem)))
)
"""


def test_invoke_prints_a_guests_long_list_of_bytes_whole(capsys, tmp_path):
    # 2,000,000 bytes, near wasmtime's per-call cap: each written as "255, " a piece at a
    # time (a string per byte joined at once had been ~2 GB for such a result)
    import wasmtime
    wasm = tmp_path / "bytes.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(LONG_BYTES))
    status, out, _ = invoke(capsys, "b(2000000)", wasm)
    assert status == 0 and out == "[" + ", ".join(["255"] * 2_000_000) + "]"
