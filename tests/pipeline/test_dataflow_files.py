"""Azure IoT Operations graph files: every published graph definition parses; a DataflowGraph
deployment with its endpoint documents; errors name FILE:LINE; --param precedence.
(No broker, no operators: ~1 s.)"""
from __future__ import annotations

import pathlib
import textwrap

import pytest

from wasinn.errors import BadValue, WasinnError
from wasinn.pipeline import graphdef
from wasinn.pipeline.schema import PipelineError

ROOT = pathlib.Path(__file__).resolve().parents[2]
AZURE = ROOT / "tests" / "data" / "azure"
PUBLISHED = sorted([*AZURE.glob("graph*.yaml"), *AZURE.glob("*-scenario/graph.dataflow.yaml")])
TEMPERATURE = "azure-samples/explore-iot-operations/temperature:1.0.0"


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: str(p.relative_to(AZURE)))
def test_every_published_graph_definition_parses(path):
    assert graphdef.served_kind(path) == "graph"
    g = graphdef.load_graph(path)
    kinds = {n.kind for n in g.nodes.values()}
    assert {"source", "sink"} <= kinds
    for n in g.nodes.values():
        assert (n.module is not None) == (n.kind in graphdef.OPERATOR_TYPES)


def test_the_complex_graph_has_all_its_parts():
    g = graphdef.load_graph(AZURE / "graph.dataflow.yaml")
    assert {n.kind for n in g.nodes.values()} == set(graphdef.OPERATION_TYPES)
    arms = {(e.src, e.arm): e.dst for e in g.edges if e.arm is not None}
    assert arms[("module-snapshot/branch", True)] == "module-format/map"
    assert arms[("module-snapshot/branch", False)] == "module-temperature/branch"
    assert g.features == ("wasi-nn",)
    props = graphdef.node_properties(g, {}, ())
    assert props["module-temperature/filter"] == (("temperature_lower_bound", "-273.15"),
                                                  ("temperature_upper_bound", "5000.0"))
    assert props["module-temperature/map"] == ()  # key1 has no default: left out


def test_a_wasinn_pipeline_file_is_still_a_pipeline():
    assert graphdef.served_kind(ROOT / "pipelines" / "image-classification.yaml") == "pipeline"


def _write(tmp_path, text, name="f.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_param_precedence_and_map_keys(tmp_path):
    p = _write(tmp_path, """\
        moduleConfigurations:
          - name: a
            parameters:
              lower: {name: temperature_lower_bound, default: "-40"}
              unit: {name: unit}
              only: {name: only}
          - name: b
            parameters:
              lower: {name: lower, default: "0"}
        operations:
          - {operationType: source, name: source}
          - {operationType: filter, name: a, module: "m:1"}
          - {operationType: map, name: b, module: "m:1"}
          - {operationType: sink, name: sink}
        connections:
          - {from: {name: source}, to: {name: a}}
          - {from: {name: a}, to: {name: b}}
          - {from: {name: b}, to: {name: sink}}
        """)
    g = graphdef.load_graph(p)
    # defaults; a parameter with nothing is left out; init sees the parameter's name
    assert graphdef.node_properties(g, {}, ()) == {
        "source": (), "a": (("temperature_lower_bound", "-40"),), "b": (("lower", "0"),), "sink": ()}
    # the deployment's configuration over defaults, --param over both; without NODE: every declaring node
    props = graphdef.node_properties(g, {"lower": "5", "unit": "F"},
                                     (graphdef.parse_param("lower=7"), graphdef.parse_param("b.lower=9")))
    assert props["a"] == (("temperature_lower_bound", "7"), ("unit", "F"))
    assert props["b"] == (("lower", "9"),)
    with pytest.raises(BadValue, match="did you mean lower"):
        graphdef.node_properties(g, {}, (graphdef.parse_param("lowr=1"),))
    with pytest.raises(BadValue, match="no operation 'c'"):
        graphdef.node_properties(g, {}, (graphdef.parse_param("c.lower=1"),))


def test_param_node_split_at_the_last_dot_before_the_equals():
    assert graphdef.parse_param("module-temperature/filter.temperature_lower_bound=-1.5") == (
        "module-temperature/filter", "temperature_lower_bound", "-1.5")
    assert graphdef.parse_param("n.v1.key=a.b=c") == ("n.v1", "key", "a.b=c")
    assert graphdef.parse_param("key=x") == (None, "key", "x")
    with pytest.raises(BadValue):
        graphdef.parse_param("novalue")


def test_module_references_answer_to_their_short_names():
    mods = {"temperature": pathlib.Path("t.wasm")}
    assert graphdef.local_module(TEMPERATURE, mods) == pathlib.Path("t.wasm")
    assert graphdef.local_module("other:1.0.0", mods) is None


@pytest.mark.parametrize("body, problem", [
    ("operations: [{operationType: window, name: w}]", "operationType must be one of"),
    ("""\
     operations:
       - {operationType: source, name: s}
       - {operationType: sink, name: k}
     schemas:
       - {name: reading, format: json, schema: '{"type": "object"}'}
     connections:
       - {from: {name: s, schemaName: readings}, to: {name: k}}
     """, "no schema named 'readings' in the graph's schemas (reading)"),
    ("""\
     operations:
       - {operationType: source, name: s}
       - {operationType: sink, name: k}
     schemas:
       - {name: reading, format: avro, schema: '{}'}
     connections:
       - {from: {name: s}, to: {name: k}}
     """, "format is one of json, delta, got 'avro'"),
    ("""\
     operations:
       - {operationType: source, name: s}
       - {operationType: branch, name: b, module: "m:1"}
       - {operationType: sink, name: k}
     connections:
       - {from: {name: s}, to: {name: b}}
       - {from: {name: b}, to: {name: k}}
     """, "its edges say which arm"),
    ("""\
     operations:
       - {operationType: source, name: s}
       - {operationType: map, name: m, module: "m:1"}
       - {operationType: sink, name: k}
     connections:
       - {from: {name: s, arm: "True"}, to: {name: m}}
       - {from: {name: m}, to: {name: k}}
     """, "only a branch's edges have an arm"),
    ("""\
     operations:
       - {operationType: source, name: s}
       - {operationType: map, name: m}
       - {operationType: sink, name: k}
     connections:
       - {from: {name: s}, to: {name: m}}
       - {from: {name: m}, to: {name: x}}
     """, "unknown operation 'x'"),
])
def test_graph_errors_name_file_and_line(tmp_path, body, problem):
    p = _write(tmp_path, body)
    with pytest.raises(PipelineError) as e:
        graphdef.load_graph(p)
    assert any(problem in line and line.startswith(f"{p}:") for line in e.value.problems), e.value.problems
    assert all(line.split(":")[1].isdigit() for line in e.value.problems)


@pytest.mark.parametrize("body, problem", [
    ("operations: " + "[" * 5000 + "]" * 5000, "nested past what Python's stack holds"),  # was a RecursionError
    ("operations: " + "[" * 70 + "]" * 70, "values nested more than 64 deep"),
    ("? [1, 2]\n: x\n", "a key is a list or a mapping; keys are plain values"),  # was a TypeError
    ("n: " + "1" * 5000, "an integer of 5000 characters; at most 64 are read"),  # was a ValueError
    ("n: 1" + ":59" * 100_000, "a value of 300001 characters; at most 65536 are read"),  # base 60: quadratic
    ("n: 1" + ":59" * 30, "an integer of 91 characters; at most 64 are read"),
])
def test_a_file_of_what_no_graph_needs_is_refused_in_one_line(tmp_path, body, problem):
    """What a graph artifact from a registry brought: each one line, read in bounded time."""
    p = _write(tmp_path, body)
    with pytest.raises(PipelineError) as e:
        graphdef.load_graph(p)
    assert len(e.value.problems) == 1 and e.value.problems[0].endswith(problem), e.value.problems


def test_a_file_of_nested_aliases_is_refused_at_its_count_of_values(tmp_path):
    """647 bytes of aliases nested 45 deep stood for billions of values: a graph pulled
    from a registry held `wasinn serve`'s start at 2.4 GB and growing."""
    from wasinn.pipeline.schema import MAX_VALUES
    lines = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 45)]
    p = _write(tmp_path, "\n".join(lines) + "\noperations: *a44\n")
    with pytest.raises(PipelineError) as e:
        graphdef.load_graph(p)
    assert e.value.problems[0].endswith(f"the file holds more than {MAX_VALUES} values (its aliases counted "
                                        "each time they are used)")


DEPLOYMENT = """\
    apiVersion: connectivity.iotoperations.azure.com/v1
    kind: DataflowEndpoint
    metadata: {name: local-broker}
    spec:
      endpointType: Mqtt
      mqttSettings: {host: "127.0.0.1:1884"}
    ---
    apiVersion: connectivity.iotoperations.azure.com/v1
    kind: RegistryEndpoint
    metadata: {name: local-registry}
    spec:
      host: "127.0.0.1:5000"
      authentication: {method: Anonymous}
    ---
    apiVersion: connectivity.iotoperations.azure.com/v1
    kind: DataflowGraph
    metadata: {name: temperature-graph, namespace: azure-iot-operations}
    spec:
      profileRef: default
      nodes:
        - nodeType: Source
          name: sensors
          sourceSettings:
            endpointRef: local-broker
            dataSources: [thermostats/temperature, thermostats/more]
        - nodeType: Graph
          name: graph
          graphSettings:
            registryEndpointRef: local-registry
            artifact: graph-simple:1.0.0
            configuration:
              - {key: key1, value: "v1"}
        - nodeType: Destination
          name: out
          destinationSettings:
            endpointRef: local-broker
            dataDestination: thermostats/converted
      nodeConnections:
        - {from: {name: sensors}, to: {name: graph}}
        - {from: {name: graph}, to: {name: out}}
    """


def test_a_deployment_with_its_endpoints(tmp_path):
    p = _write(tmp_path, DEPLOYMENT)
    assert graphdef.served_kind(p) == "deployment"
    d = graphdef.load_deployment(p)
    assert (d.name, d.artifact, d.registry) == ("temperature-graph", "graph-simple:1.0.0", "http://127.0.0.1:5000")
    assert d.sources == ("thermostats/temperature", "thermostats/more") and d.sink == "thermostats/converted"
    assert d.mqtt_host == "127.0.0.1:1884" and d.configuration == {"key1": "v1"}
    wasm = tmp_path / "t.wasm"
    wasm.write_bytes(b"\0asm")
    flow = graphdef.resolve(p, graphdef.ServeFlags(modules={"graph-simple:1.0.0": AZURE / "graph-simple.yaml",
                                                            TEMPERATURE: wasm}))
    assert flow.properties["module-temperature/map"] == (("key2", "v1"),)  # key1's name is key2
    assert (flow.mqtt.host, flow.mqtt.port, flow.mqtt.group) == ("127.0.0.1", 1884, "temperature-graph")
    assert flow.mqtt.dead_letter_topic == "thermostats/converted/dead-letter"
    again = graphdef.Dataflow.from_json(flow.to_json())
    assert again == flow


def test_only_the_spec_of_a_deployment(tmp_path):
    spec = DEPLOYMENT.split("spec:\n")[-1]
    p = _write(tmp_path, textwrap.dedent(spec).replace("local-registry", "r").replace("local-broker", "default"))
    d = graphdef.load_deployment(p)
    assert d.registry is None and d.mqtt_host is None and d.artifact == "graph-simple:1.0.0"


@pytest.mark.parametrize("change, problem", [
    (("endpointType: Mqtt", "endpointType: Kafka"), "speaks MQTT only"),
    (("dataDestination: thermostats/converted", "dataDestination: thermostats/converted\n        headers: "
      "[{actionType: AddIfNotPresent, key: a, value: b}]"), "header actions are not supported"),
    (("- {from: {name: sensors}, to: {name: graph}}", "- {from: {name: sensors, schema: {schemaRef: "
      "'aio-sr://ns/s:1', serializationFormat: Parquet}}, to: {name: graph}}"), "carry Json; got 'Parquet'"),
    (("- {from: {name: sensors}, to: {name: graph}}", "- {from: {name: sensors, schema: {schemaRef: "
      "'ns/s'}}, to: {name: graph}}"), "a schema reference is aio-sr://NAMESPACE/NAME:VERSION, got 'ns/s'"),
    (("nodeType: Graph", "nodeType: Grpah"), "nodeType is Source, Graph or Destination"),
])
def test_what_wasinn_refuses_in_a_deployment_in_one_line(tmp_path, change, problem):
    p = _write(tmp_path, DEPLOYMENT)
    p.write_text(p.read_text().replace(*change))
    with pytest.raises(PipelineError) as e:
        graphdef.load_deployment(p)
    assert any(problem in line and line.startswith(f"{p}:") for line in e.value.problems), e.value.problems


def test_a_graph_without_endpoints_or_modules_is_refused_in_one_line(tmp_path):
    g = AZURE / "graph-simple.yaml"
    with pytest.raises(BadValue, match="--source TOPIC"):
        graphdef.resolve(g, graphdef.ServeFlags())
    with pytest.raises(BadValue, match=f"--module {TEMPERATURE}=FILE.wasm"):
        graphdef.resolve(g, graphdef.ServeFlags(sources=("in",), sink="out"))
    with pytest.raises(WasinnError, match="no such file"):
        graphdef.resolve(g, graphdef.ServeFlags(sources=("in",), sink="out",
                                                modules={"temperature": tmp_path / "missing.wasm"}))


@pytest.mark.parametrize("argv, message", [
    (["--param", "kye1=1"], "--param kye1: no operation declares the parameter 'kye1'; did you mean key1?"),
    (["--param", "module-temperature/ma.key1=1"], "did you mean module-temperature/map?"),
    (["--param", "key1"], "--param wants [NODE.]KEY=VALUE"),
    (["--modle", "x=y.wasm"], "did you mean --module"),
    (["--state-store", "mysql://db"], "--state-store wants redis://"),
])
def test_serve_flag_mistakes_exit_2_in_one_line(capsys, tmp_path, argv, message):
    from wasinn.cli import main
    wasm = tmp_path / "t.wasm"
    wasm.write_bytes(b"\0asm")
    try:
        code = main(["serve", str(AZURE / "graph-simple.yaml"), "--source", "in", "--sink", "out",
                     "--module", f"temperature={wasm}", *argv])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors


def test_graph_flags_on_a_pipeline_file_exit_2(capsys):
    from wasinn.cli import main
    assert main(["serve", str(ROOT / "pipelines" / "image-classification.yaml"), "--sink", "x"]) == 2
    assert "--sink: for Azure graph files" in capsys.readouterr().err


GRAPH_WITH_SCHEMAS = """\
    moduleRequirements: {apiVersion: "1.1.0", runtimeVersion: "1.1.0"}
    operations:
      - {operationType: source, name: s}
      - {operationType: map, name: m, module: "m:1"}
      - {operationType: sink, name: k}
    schemas:
      - name: reading
        format: json
        schema: '{"type": "object", "required": ["temperature"]}'
      - name: converted
        format: json
        schema: {type: object}
    connections:
      - {from: {name: s, schemaName: reading}, to: {name: m}}
      - {from: {name: m, schemaName: converted}, to: {name: k}}
    """


def test_a_graphs_own_schemas_ride_on_its_connections(tmp_path):
    """`schemas` (Azure's ConfigGraph: name, format, schema) named by `from.schemaName`:
    the messages on such a connection carry the schema inline (test_operator_services
    shows an operator reading it)."""
    g = graphdef.load_graph(_write(tmp_path, GRAPH_WITH_SCHEMAS))
    assert {(e.src, e.dst): e.schema for e in g.edges} == {
        ("s", "m"): ("reading", '{"type": "object", "required": ["temperature"]}'),
        ("m", "k"): ("converted", '{"type": "object"}')}
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(b"\0asm")
    flow = graphdef.resolve(g.path, graphdef.ServeFlags(modules={"m": wasm}, sources=("in",), sink="out"))
    assert graphdef.Dataflow.from_json(flow.to_json()) == flow


def _with_schema_ref(tmp_path, ref="aio-sr://factory/reading:2"):
    p = _write(tmp_path, DEPLOYMENT)
    p.write_text(p.read_text().replace("- {from: {name: sensors}, to: {name: graph}}",
                                       f"- {{from: {{name: sensors, schema: {{schemaRef: '{ref}', "
                                       "serializationFormat: Json}}, to: {name: graph}}"))
    return p


def test_a_deployments_schema_reference_is_served_from_the_schemas_file(tmp_path):
    """`nodeConnections[].from.schema.schemaRef` names a schema of --schemas; messages from
    the source carry the reference (`message.schema`), which operators resolve through
    `schema-registry`. Without --schemas, or naming no schema there: one line at start."""
    import json
    p = _with_schema_ref(tmp_path)
    wasm = tmp_path / "t.wasm"
    wasm.write_bytes(b"\0asm")
    modules = {"graph-simple:1.0.0": AZURE / "graph-simple.yaml", TEMPERATURE: wasm}
    assert graphdef.load_deployment(p).input_schema == "aio-sr://factory/reading:2"
    with pytest.raises(BadValue, match=r":\d+: the schema reference 'aio-sr://factory/reading:2' needs a schema "
                                       r"registry: give one with --schemas FILE$"):
        graphdef.resolve(p, graphdef.ServeFlags(modules=modules))
    schemas = tmp_path / "schemas.json"
    schemas.write_text(json.dumps([{"name": "reading", "namespace": "factory", "version": "1", "content": {}}]))
    with pytest.raises(BadValue, match=r"names no schema in --schemas .*schemas.json \(it has: "
                                       r"aio-sr://factory/reading:1\)$"):
        graphdef.resolve(p, graphdef.ServeFlags(modules=modules, schemas=schemas))
    schemas.write_text(json.dumps([{"name": "reading", "namespace": "factory", "version": "2", "content": {}}]))
    flow = graphdef.resolve(p, graphdef.ServeFlags(modules=modules, schemas=schemas))
    assert flow.input_schema == "aio-sr://factory/reading:2"
    assert graphdef.Dataflow.from_json(flow.to_json()) == flow
