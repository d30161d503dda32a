"""The cats-vs-dogs classifier: model, data, training, evaluation, registry.

TensorFlow is only ever imported inside functions (a top-level import costs every process about 2 s).
"""

# TensorFlow's shared library carries its own SQLite without FTS5. Whichever loads first wins the symbols,
# so the system SQLite (with FTS5, which the catalog's search needs) is loaded here, before any TensorFlow.
import os
import sqlite3  # noqa: F401

# oneDNN's custom TensorFlow ops abort the process ("double free or corruption") during `fit` on this
# project's AMD EPYC CI machines (TensorFlow 2.21, measured 2026-11-21); TensorFlow reads this on import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
