"""The pipeline file: the example loads, and each mistake is reported with its line and field."""
from __future__ import annotations

import pathlib
import re

import pytest

from wasinn.pipeline import PipelineError, load_pipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]

VALID = f"""\
moduleRequirements:
  apiVersion: "1.1.0"
  runtimeVersion: "1.1.0"
  features:
    - name: wasi-nn
modules:
  - name: front
    type: wasm
    path: {ROOT}/guest/stage-model
    config:
      model: {ROOT}/pipelines/models/efficientnet-lite0-preprocess.onnx
  - name: net
    type: wasm
    path: {ROOT}/guest/stage-model
    config:
      model: {ROOT}/models/efficientnet-lite0/model.onnx
  - name: top
    type: wasm
    path: {ROOT}/guest/stage-postprocess
    config:
      labels: {ROOT}/models/efficientnet-lite0/labels.txt
      top: 3
operations:
  - operationType: source
    name: in
    topic: cams/+/jpeg
  - operationType: map
    name: a
    module: front
  - operationType: map
    name: b
    module: net
  - operationType: map
    name: c
    module: top
  - operationType: sink
    name: out
    topic: cams/predictions
connections:
  - {{from: {{name: in}}, to: {{name: a}}}}
  - {{from: {{name: a}}, to: {{name: b}}}}
  - {{from: {{name: b}}, to: {{name: c}}}}
  - {{from: {{name: c}}, to: {{name: out}}}}
mqtt:
  group: cams
  deadLetterTopic: cams/dead
"""


def load(tmp_path: pathlib.Path, text: str):
    path = tmp_path / "graph-definition.yaml"
    path.write_text(text)
    return load_pipeline(path)


def problems(tmp_path: pathlib.Path, text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        load(tmp_path, text)
    return info.value.problems


def line_of(text: str, needle: str, nth: int = 0) -> int:
    return [i + 1 for i, line in enumerate(text.splitlines()) if needle in line][nth]


def test_the_example_pipeline_loads():
    p = load_pipeline(ROOT / "pipelines" / "image-classification.yaml")
    assert p.map_order() == ["preprocess", "inference", "postprocess"]
    assert (p.source.topic, p.sink.topic, p.mqtt.dead_letter_topic) == ("images/in", "images/predictions",
                                                                        "images/dead-letter")
    assert (p.mqtt.host, p.mqtt.port, p.mqtt.group) == ("127.0.0.1", 1883, "image-classification")
    assert p.modules["inference"].files["model"] == ROOT / "models" / "efficientnet-lite0" / "model.onnx"
    assert p.modules["postprocess"].config["top"] == "5"


def test_a_valid_file_loads_with_defaults(tmp_path):
    p = load(tmp_path, VALID)
    assert p.map_order() == ["a", "b", "c"]
    assert p.inputs_of("b") == ["a"] and p.outputs_of("b") == ["c"]
    assert (p.mqtt.receive_maximum, p.mqtt.session_expiry) == (2, 3600)
    assert p.with_broker("10.1.2.3:1884").mqtt.port == 1884


def test_an_unknown_module_names_its_line_and_the_known_ones(tmp_path):
    text = VALID.replace("module: net", "module: network")
    [problem] = problems(tmp_path, text)
    assert problem == (f"{tmp_path / 'graph-definition.yaml'}:{line_of(text, 'module: network')}: "
                       "operations[2].module: unknown module 'network'; the modules are: front, net, top")


def test_the_wasi_nn_feature_is_required(tmp_path):
    text = VALID.replace("    - name: wasi-nn\n", "    - name: wasi-http\n")
    found = problems(tmp_path, text)
    assert any(f":{line_of(text, 'wasi-http')}: moduleRequirements.features[0]: unknown feature 'wasi-http'" in p
               for p in found)
    assert any(f":{line_of(text, 'features:')}: moduleRequirements.features: the features must include wasi-nn"
               in p for p in found)


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_only_runtime_version_1_1_0_runs(tmp_path, version):
    text = VALID.replace('runtimeVersion: "1.1.0"', f'runtimeVersion: "{version}"')
    [problem] = problems(tmp_path, text)
    assert f":{line_of(text, 'runtimeVersion')}: moduleRequirements.runtimeVersion: runtimeVersion " \
           f"'{version}' is not supported; wasinn runs 1.1.0" in problem


def test_a_cycle_is_shown_with_the_line_that_closes_it(tmp_path):
    text = VALID.replace("  - {from: {name: c}, to: {name: out}}\n",
                         "  - {from: {name: c}, to: {name: out}}\n  - {from: {name: c}, to: {name: a}}\n")
    [problem] = problems(tmp_path, text)
    assert "connections: the connections form a cycle: a -> b -> c -> a" in problem
    assert f"(closed at line {line_of(text, 'to: {name: a}}', 1)})" in problem


def test_a_missing_model_file_names_the_file_and_line(tmp_path):
    text = VALID.replace("model.onnx", "modle.onnx")
    [problem] = problems(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'graph-definition.yaml'}:{line_of(text, 'modle.onnx')}: "
                              "modules[1].config.model: no such model file: ")
    assert problem.endswith("models/efficientnet-lite0/modle.onnx")


def test_relative_paths_are_relative_to_the_pipeline_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes((ROOT / "pipelines/models/efficientnet-lite0-preprocess.onnx").read_bytes())
    p = load(tmp_path, VALID.replace(f"{ROOT}/pipelines/models/efficientnet-lite0-preprocess.onnx", "m.onnx"))
    assert p.modules["front"].files["model"] == tmp_path / "m.onnx"


def test_every_problem_is_reported_at_once(tmp_path):
    text = (VALID.replace("type: wasm", "type: docker", 1).replace("operationType: sink", "operationType: drain")
            .replace("group: cams", "group: cams/1").replace("apiVersion: ", "apiVerison: "))
    with pytest.raises(PipelineError) as info:
        load(tmp_path, text)
    found = info.value.problems
    fields = [re.match(r".*?:\d+: (\S+):", p).group(1) for p in found]
    assert {"modules[0].type", "operations[4].operationType", "mqtt.group", "moduleRequirements.apiVerison",
            "moduleRequirements"} <= set(fields), found
    assert str(info.value).startswith(f"{tmp_path / 'graph-definition.yaml'}: {len(found)} problems")


@pytest.mark.parametrize("edit, field, message", [
    (("topic: cams/predictions", "topic: cams/#"), "operations[4].topic", "cannot hold the wildcards"),
    (("deadLetterTopic: cams/dead", "deadLetterTopic: cams/predictions"), "mqtt.deadLetterTopic", "must differ"),
    (("  - {from: {name: c}, to: {name: out}}\n", "  - {from: {name: c}, to: {name: out}}\n"
      "  - {from: {name: b}, to: {name: out}}\n"), "connections", "the sink 'out' takes one result"),
    (("  - {from: {name: a}, to: {name: b}}\n", ""), "operations.b", "gets no input"),
    (("name: in\n", "name: in\n    maxPixels: 0\n"), "operations[0].maxPixels", "expected a whole number >= 1"),
    (("path: " + str(ROOT) + "/guest/stage-model", "path: ./nowhere"), "modules[0].path", "no component at"),
    (("  group: cams\n", "  group: cams\n  broker: localhost\n"), "mqtt.broker", "a broker is HOST:PORT"),
])
def test_other_mistakes(tmp_path, edit, field, message):
    found = problems(tmp_path, VALID.replace(*edit, 1))
    assert any(f" {field}: " in p and message in p for p in found), found


def test_yaml_syntax_errors_name_the_line(tmp_path):
    text = VALID.replace("  - name: top\n", "  - name: top\n   bad: [\n")
    [problem] = problems(tmp_path, text)
    assert re.match(r".*graph-definition.yaml:\d+: not valid YAML", problem)


def test_tls_and_credentials_resolve_relative_to_the_pipeline_file(tmp_path):
    (tmp_path / "certs").mkdir()
    for name in ("ca.crt", "me.crt", "me.key", "secret"):
        (tmp_path / ("certs" if name != "secret" else ".") / name).write_text("x")
    p = load(tmp_path, VALID + "  tls: {ca: certs/ca.crt, cert: certs/me.crt, key: certs/me.key}\n"
                                "  username: cam-7\n  passwordFile: secret\n")
    assert p.mqtt.tls.ca == tmp_path / "certs" / "ca.crt" and p.mqtt.tls.key == tmp_path / "certs" / "me.key"
    assert (p.mqtt.username, p.mqtt.password_file) == ("cam-7", tmp_path / "secret")
    # --broker replaces the address only; --tls-ca etc. replace their setting
    q = p.with_overrides(broker="10.0.0.9:8883")
    assert (q.mqtt.address, q.mqtt.tls, q.mqtt.username) == ("10.0.0.9:8883", p.mqtt.tls, "cam-7")
    r = p.with_overrides(tls_ca="system", username="other", password_file=str(tmp_path / "secret"))
    assert r.mqtt.tls.ca is None and r.mqtt.tls.cert == p.mqtt.tls.cert and r.mqtt.username == "other"
    assert load(tmp_path, VALID + "  tls: {ca: system}\n").mqtt.tls.ca is None


@pytest.mark.parametrize("block, field, message", [
    ("  tls: {ca: nope.crt}\n", "mqtt.tls.ca", "no such file: "),
    ("  tls: {cert: a.crt}\n", "mqtt.tls", "missing 'ca'"),
    ("  tls: {ca: system, cert: ca.crt}\n", "mqtt.tls", "a client certificate needs both cert and key"),
    ("  tls: {ca: system, pin: x}\n", "mqtt.tls.pin", "unknown key 'pin'"),
    ("  passwordFile: ca.crt\n", "mqtt.passwordFile", "a password goes with a username"),
    ("  username: cam\n  passwordFile: missing\n", "mqtt.passwordFile", "no such file: "),
    ("  password: hunter2\n", "mqtt.password", "unknown key 'password'"),
])
def test_tls_and_credential_mistakes(tmp_path, block, field, message):
    (tmp_path / "ca.crt").write_text("x")
    found = problems(tmp_path, VALID + block)
    assert any(f" {field}: " in p and message in p for p in found), found
