"""Prometheus metrics of the API process (`GET /metrics`)."""

from prometheus_client import Counter, Gauge, Histogram

INFERENCE_LATENCY = Histogram("imago_inference_latency_seconds", "Synchronous prediction latency",
                              ["model_version"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
INFERENCES = Counter("imago_inferences_total", "Synchronous predictions", ["model_version", "outcome"])
FEEDBACK = Counter("imago_feedback_total", "Feedback received", ["model_version", "verdict"])
AGREEMENT = Gauge("imago_prediction_feedback_agreement_ratio",
                  "Share of feedback saying the prediction was right", ["model_version"])
