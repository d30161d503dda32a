"""One module per enrichment stage: its per-image work over a batch, what it stores, and its checks.

Each `run(batch, …)` returns a `StageReport`; the Dagster assets (`imago_pipeline/defs/enrichment`) call
these and show the report, and nothing here knows about Dagster.
"""
