"""Data-flow pipelines of wasi:nn components, served over MQTT (`wasinn serve`).

    schema.py      the pipeline file: YAML -> a checked `Pipeline`, errors with line numbers
    components.py  a module's component (its guest directory built once, cached)
    graph.py       one message through the stages, tensors handed on as handles
    graphdef.py    Azure IoT Operations graph definitions and DataflowGraph deployments ->
                   a checked `Dataflow` (parameters, endpoints, artifacts resolved)
    artifacts.py   operators and graphs pulled by reference (OCI registry or layout), digests
                   checked, cached
    engine.py      what answers a worker's messages: a pipeline's stages, or a graph's
                   operators (operator.py) with Azure's eight operation types
    windows.py     accumulate windows in the state store, emitted once under leases
    worker.py      one MQTT session: QoS 1, ack after the result is published, dead letters
    connection.py  the broker connection: TLS, credentials, reconnecting with backoff
    supervisor.py  `wasinn serve`: N worker processes, restarted with their sessions; lost
                   nodes' sessions rescued
    metrics.py     Prometheus /metrics and /healthz
    jsonlog.py     structured (JSON lines) logs
"""
from .graph import GraphRunner, Outcome, StageFailure
from .schema import Pipeline, PipelineError, load_pipeline

__all__ = ["GraphRunner", "Outcome", "Pipeline", "PipelineError", "StageFailure", "load_pipeline"]
