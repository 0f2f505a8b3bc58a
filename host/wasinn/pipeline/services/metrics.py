"""The `metrics` interface: an operator's counters and histograms in wasinn's Prometheus
metrics (`/metrics` of `wasinn serve`; in a worker, prometheus-client's multiprocess
files).

An operator's metric NAME becomes `wasinn_operator_NAME` (characters Prometheus does not
allow become `_`, a counter's `_total` suffix goes, as prometheus-client drops it) with
the label `operator` (the node's name) plus the operator's own labels. One name may
carry different label keys from call to call (Azure's temperature module counts
`requests` by module, and by module and unit): each key set is its own series in the
same family. One name keeps one kind; a call that would make it another,
or that would make an operator report more than `max-metric-series` distinct name and
label sets, or a series of more than MAX_LABELS labels (MAX_LABEL_TEXT characters
together), or a histogram's NaN, returns `incompatible-type` saying so.
"""
from __future__ import annotations

import re
import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric

PREFIX = "wasinn_operator_"
# Names, label keys and values longer than this are refused, and series with more labels
# than MAX_LABELS: series are held forever, and each is written whole on every scrape.
MAX_TEXT = 200
MAX_LABELS = 32
# The characters of a series' label keys and values together: a histogram's series is
# ~17 lines of every scrape, each with all its labels (32 of 200 characters each: one
# operator's 256 series made a 60 MB scrape, 0.4 s and +124 MB a scrape)
MAX_LABEL_TEXT = 1024
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
# label keys an operator may not use: wasinn's own, and Prometheus' (a histogram's buckets
# are `le`: a counter labelled le="x" beside a histogram of its family broke every scrape)
_RESERVED = {"operator", "le", "quantile"}


class MetricError(Exception):
    """What the operator did wrong (the `incompatible-type` case's text)."""


class MetricFamilies:
    """The metric families operators created in one process, registered in `registry` as
    one collector. Each (name, label keys) is a prometheus-client metric of its own, not
    registered by itself (a registry wants one label set per name); `collect` merges
    them by name. In a worker (multiprocess mode) their values go to the shared files,
    which the supervisor's collector merges the same way."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self._families: dict[str, tuple[str, dict[tuple[str, ...], object]]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def family(self, kind: str, name: str, keys: tuple[str, ...]):
        with self._lock:
            found_kind, by_keys = self._families.setdefault(name, (kind, {}))
            if found_kind != kind:
                raise MetricError(f"metric {name!r} is a {found_kind}, not a {kind}")
            metric = by_keys.get(keys)
            if metric is None:
                cls = Counter if kind == "counter" else Histogram
                metric = by_keys[keys] = cls(PREFIX + name, f"operator metric {name}", ["operator", *keys],
                                             registry=None)
            return metric

    def collect(self):
        with self._lock:
            metrics = [list(by_keys.values()) for _, by_keys in self._families.values()]
        for group in metrics:
            merged = None
            for metric in group:
                for family in metric.collect():
                    if merged is None:
                        merged = Metric(family.name, family.documentation, family.type)
                    merged.samples.extend(family.samples)
            if merged is not None:
                yield merged


class OperatorMetrics:
    """The metrics of one operator."""

    def __init__(self, families: MetricFamilies, operator: str, max_series: int):
        self._families = families
        self._operator = operator
        self._max_series = max_series
        self._series: set[tuple] = set()
        # (kind, name, labels as given) -> its prometheus child: an operator counting per
        # message repeats one call, which then costs a lookup instead of the checks of
        # `_new_series` (~20 us a call after a model's run has evicted them from cache).
        # Only accepted series enter, at most 4 per allowed series (label orders).
        self._children: dict[tuple, object] = {}

    def add(self, name: str, value: int, labels: list[tuple[str, str]] | None) -> None:
        self._series_of("counter", name, labels).inc(value)

    def record(self, name: str, value: float, labels: list[tuple[str, str]] | None) -> None:
        if value != value:  # NaN: in no bucket, and the series' sum NaN for good
            raise MetricError(f"metric {name!r}: a histogram records numbers; NaN is none")
        self._series_of("histogram", name, labels).observe(value)

    def _series_of(self, kind: str, name: str, labels: list[tuple[str, str]] | None):
        key = (kind, name, None if labels is None else tuple(labels))
        child = self._children.get(key)
        if child is None:
            child = self._new_series(kind, name, labels)
            if len(self._children) < 4 * self._max_series:
                self._children[key] = child
        return child

    def _new_series(self, kind: str, name: str, labels: list[tuple[str, str]] | None):
        if not name or len(name) > MAX_TEXT:
            raise MetricError(f"a metric name has 1 to {MAX_TEXT} characters, got {len(name)}")
        clean = _INVALID.sub("_", name)
        if kind == "counter" and clean.endswith("_total"):
            clean = clean[:-len("_total")]  # as prometheus-client names it: one family with a counter `NAME`
        if not clean:
            raise MetricError(f"metric {name!r}: a counter's name is more than its _total suffix")
        if labels and len(labels) > MAX_LABELS:
            raise MetricError(f"metric {name!r}: {len(labels)} labels; a series has at most {MAX_LABELS}")
        if labels and sum(len(k) + len(v) for k, v in labels) > MAX_LABEL_TEXT:
            raise MetricError(f"metric {name!r}: its label keys and values have more than {MAX_LABEL_TEXT} "
                              "characters together")
        pairs = {}
        for key, value in labels or ():
            if not key or len(key) > MAX_TEXT or len(value) > MAX_TEXT:
                raise MetricError(f"metric {name!r}: label keys have 1 to {MAX_TEXT} characters and values "
                                  f"at most {MAX_TEXT}")
            key = _INVALID.sub("_", key)
            if key[0].isdigit() or key.startswith("__") or key in _RESERVED or key in pairs:
                raise MetricError(f"metric {name!r}: label key {key!r} is reserved, repeated or invalid")
            pairs[key] = value
        keys = tuple(sorted(pairs))
        values = tuple(pairs[k] for k in keys)
        # a series is its name, its label keys and their values: counted without its keys,
        # label sets of new keys and the same values had each made a series (and a metric
        # in the family) past the limit: 20,000 calls, +200 MB, a 250 MB scrape
        series = (clean, keys, values)
        if series not in self._series and len(self._series) >= self._max_series:
            raise MetricError(f"operator {self._operator!r} reports more than {self._max_series} metric series "
                              "(limit 'max-metric-series', --max-metric-series)")
        family = self._families.family(kind, clean, keys)
        self._series.add(series)
        return family.labels(self._operator, *values)
