"""Prometheus metrics of the API (`GET /metrics`): one registry per app.

Request, upload and inference figures are counted by this process. Pipeline figures (per-stage durations
and failures) are read from the catalog at scrape time, so they cover every Dagster run, whichever process
ran it, and every API process reports the same totals.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from imago_pipeline.core.catalog import Catalog

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class PipelineCollector(Collector):
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def collect(self):
        durations = SummaryMetricFamily("imago_pipeline_stage_duration_seconds",
                                        "Time spent per image and stage by the pipeline (latest run of each)",
                                        labels=["stage"])
        outcomes = CounterMetricFamily("imago_pipeline_stage_results", "Images per stage and outcome (latest run)",
                                       labels=["stage", "status"])
        per_stage: dict[str, list[float]] = {}
        for stage, status, count, total_ms in self.catalog.results.stage_statistics():
            outcomes.add_metric([stage, status], count)
            entry = per_stage.setdefault(stage, [0, 0.0])
            entry[0] += count
            entry[1] += (total_ms or 0.0) / 1000
        for stage, (count, seconds) in sorted(per_stage.items()):
            durations.add_metric([stage], count_value=count, sum_value=seconds)
        yield durations
        yield outcomes
        labels = GaugeMetricFamily("imago_classified_images", "Images per current label (cat, dog, other)",
                                   labels=["label"])
        for label, count in sorted(self.catalog.results.label_counts().items()):
            labels.add_metric([label], count)
        yield labels


class ApiMetrics:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("imago_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=r)
        self.latency = Histogram("imago_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.uploads = Counter("imago_uploads_total", "Upload attempts by outcome", ["outcome"], registry=r)
        self.upload_bytes = Counter("imago_upload_bytes_total", "Bytes of accepted new uploads", registry=r)
        self.inference_latency = Histogram("imago_inference_latency_seconds", "Synchronous prediction latency",
                                           ["model_version"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inferences = Counter("imago_inferences_total", "Synchronous predictions", ["model_version", "outcome"],
                                  registry=r)
        self.predicted = Counter("imago_predicted_labels_total", "Synchronous predictions by label (cat, dog, other)",
                                 ["model_version", "label"], registry=r)
        self.feedback = Counter("imago_feedback_total", "Feedback received", ["model_version", "verdict"], registry=r)
        self.agreement = Gauge("imago_prediction_feedback_agreement_ratio",
                               "Share of feedback saying the prediction was right", ["model_version"], registry=r)
        self.erasures = Counter("imago_erasures_total", "Images erased on request", registry=r)
        r.register(PipelineCollector(catalog))

    def refresh_gauges(self) -> None:
        for version, (total, agreed) in self.catalog.feedback.agreement_by_model().items():
            self.agreement.labels(version).set(agreed / total if total else 0.0)
