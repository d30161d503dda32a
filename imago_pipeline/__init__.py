"""Imago's Dagster code location and the library behind the API and the CLI."""

# Load the system SQLite (with FTS5) before anything can load TensorFlow, whose bundled SQLite lacks it.
import sqlite3  # noqa: F401
