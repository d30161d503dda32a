"""Benchmark: build every SQL model of `dbt_like_sql/` on a lake, run its data tests, then the README's
example `imago sql` queries, and print each one's time and the process's peak RSS.

Make a lake first with `bench/synthetic_lake.py` (or point at `.imago/lake`). The models are written
into `<lake>/models/`, as the Dagster assets write them. With `--compact`, the models and queries run once
on the lake as it is, then the lake is compacted (timed per table), then they run again; with
`--add-batches N` a further N batch files per table are written after the first compaction and an
incremental compaction is timed (as one after the grace period: it also deletes the files the first run
folded), then everything runs again. `--json` prints one JSON object per step: {"step", "wall_s", "rows"}.

    .venv/bin/python bench/synthetic_lake.py /tmp/lake --images 1000000
    .venv/bin/python bench/sql_models.py /tmp/lake --compact --add-batches 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console
from rich.table import Table

from imago_pipeline.core.analytics import build_model, load_project, open_analytics, run_query, run_tests

# The three example queries of the README's "Analytics" section.
QUERIES = {  # the README's labels by camera and top tags, and the top cameras
    "top cameras": "SELECT * FROM camera_counts LIMIT 5",
    "labels by camera": "SELECT e.make, c.label, count(*) AS images, round(avg(c.probability), 3) AS mean_probability "
                        "FROM exif e JOIN classification c USING (image_id) WHERE e.make IS NOT NULL "
                        "GROUP BY ALL ORDER BY images DESC, make, label LIMIT 5",
    "top tags": "SELECT tag, count(*) AS images FROM (SELECT unnest(tags) AS tag FROM vision) "
                "GROUP BY tag ORDER BY images DESC, tag LIMIT 5",
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", type=Path, help="lake root (from bench/synthetic_lake.py, or .imago/lake)")
    parser.add_argument("--compact", action="store_true", help="also compact the lake and run everything again")
    parser.add_argument("--add-batches", type=int, default=0, metavar="N",
                        help="after compacting, write N more batches per table and time an incremental compaction")
    parser.add_argument("--json", action="store_true", help="one JSON object per step instead of a table")
    args = parser.parse_args()
    lake = args.lake.resolve()
    project = load_project()
    table = Table(title=f"SQL models on {lake}", title_justify="left")
    for column in ("step", "rows", "wall s", "CPU s", "tests", "peak RSS MiB"):
        table.add_column(column, justify="left" if column in ("step", "tests") else "right")

    def timed(label: str, work) -> None:
        wall, cpu = time.perf_counter(), time.process_time()  # CPU: every DuckDB thread of this process
        rows, tests = work()
        elapsed = time.perf_counter() - wall
        if args.json:
            print(json.dumps({"step": label, "wall_s": round(elapsed, 3),
                              "rows": int(str(rows).replace(",", "") or 0)}), flush=True)
        table.add_row(label, rows, f"{elapsed:.2f}", f"{time.process_time() - cpu:.2f}", tests,
                      f"{peak_rss_mib():,.0f}")

    started, started_cpu = time.perf_counter(), time.process_time()
    con = None

    def open_views():
        nonlocal con
        con = open_analytics(lake)
        return "", ""

    def build(name: str):
        built = build_model(con, project, name, lake)
        outcomes = run_tests(con, project, name, lake)
        failed = [o.test.name for o in outcomes if not o.passed]
        return f"{built.rows:,}", (f"{len(outcomes) - len(failed)}/{len(outcomes)} passed"
                                   + (f" (failed: {', '.join(failed)})" if failed else ""))

    def everything(suffix: str) -> None:
        timed(f"open_analytics (views){suffix}", open_views)
        for name in project.models:
            timed(f"model {name}{suffix}", lambda name=name: build(name))
        for label, sql in QUERIES.items():
            timed(f"query: {label}{suffix}", lambda sql=sql: (f"{len(run_query(con, sql).fetchall()):,}", ""))
        con.close()

    everything("" if not args.compact else " (before compaction)")
    if args.compact:
        compact_all(lake, timed, "compaction", 900)
        everything(" (compacted)")
        if args.add_batches:
            add_batches(lake, args.add_batches)
            # as a run after the grace period: the files the first run folded are deleted by this one
            compact_all(lake, timed, "incremental compaction", 0)
            everything(" (compacted again)")
    if not args.json:
        table.add_row("total", "", f"{time.perf_counter() - started:.2f}",
                      f"{time.process_time() - started_cpu:.2f}", "", f"{peak_rss_mib():,.0f}")
        Console(width=140).print(table)
        load = os.getloadavg()
        print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


def compact_all(lake: Path, timed, label: str, grace_seconds: float) -> None:
    from imago_pipeline.core.analytics.compaction import compact_table
    from imago_pipeline.core.stores.lake import Lake
    from imago_pipeline.core.stores.lake_tables import LAKE_TABLES

    for table in LAKE_TABLES.values():
        def work(table=table):
            report = compact_table(Lake(lake), table, grace_seconds=grace_seconds)
            return f"{report.rows:,}", (f"{report.tail_files:,} files, {report.months} tenant-months, "
                                        f"{report.deleted_files:,} deleted")
        timed(f"{label} {table.name}", work)


def add_batches(lake: Path, batches: int) -> None:
    """New batch files, as the pipeline would write after the compaction: each batch re-writes the rows of
    100 images of the newest files of each table (reprocessed), under a new batch id."""
    import uuid

    import pyarrow.parquet as pq

    from imago_pipeline.core.stores.lake_tables import LAKE_TABLES

    for table in (t for t in LAKE_TABLES.values() if t.per_image):  # what the pipeline appends to
        files = sorted((lake / table.name).glob("*/*/part-*.parquet"))[-batches:] or []
        if not files:
            compacted = sorted((lake / table.name).glob("*/_compacted/*.parquet"))[-1:]
            files = compacted
        for source in files[:batches]:
            data = pq.read_table(source, partitioning=None).slice(0, 100)
            day = source.parent if source.parent.name.startswith("date=") else None
            folder = day or next((lake / table.name).glob("*/date=*"))
            data = data.drop_columns([c for c in ("date",) if c in data.column_names])
            pq.write_table(data, folder / f"part-{uuid.uuid4().hex}.parquet", compression="zstd")


if __name__ == "__main__":
    main()
