"""Benchmark: build every SQL model of `dbt_like_sql/` on a lake, run its data tests, then the README's
example `imago sql` queries, and print each one's time and the process's peak RSS.

Make a lake first with `bench/synthetic_lake.py` (or point at `.imago/lake`). The models are written
into `<lake>/models/`, as the Dagster assets write them.

    .venv/bin/python bench/synthetic_lake.py /tmp/lake --images 1000000
    .venv/bin/python bench/sql_models.py /tmp/lake
"""

from __future__ import annotations

import argparse
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
README_QUERIES = {
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
    args = parser.parse_args()
    lake = args.lake.resolve()
    project = load_project()
    table = Table(title=f"SQL models on {lake}", title_justify="left")
    for column in ("step", "rows", "wall s", "CPU s", "tests", "peak RSS MiB"):
        table.add_column(column, justify="left" if column in ("step", "tests") else "right")

    def timed(label: str, work) -> None:
        wall, cpu = time.perf_counter(), time.process_time()  # CPU: every DuckDB thread of this process
        rows, tests = work()
        table.add_row(label, rows, f"{time.perf_counter() - wall:.2f}", f"{time.process_time() - cpu:.2f}", tests,
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

    timed("open_analytics (views)", open_views)
    for name in project.models:
        timed(f"model {name}", lambda name=name: build(name))
    for label, sql in README_QUERIES.items():
        timed(f"query: {label}", lambda sql=sql: (f"{len(run_query(con, sql).fetchall()):,}", ""))
    table.add_row("total", "", f"{time.perf_counter() - started:.2f}", f"{time.process_time() - started_cpu:.2f}",
                  "", f"{peak_rss_mib():,.0f}")
    Console(width=140).print(table)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")


if __name__ == "__main__":
    main()
