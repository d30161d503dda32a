"""What every enrichment stage does around its per-image work, for one batch of images.

A batch is the images of one run (a range of image ids). A stage runs its work on each image (spread over
the worker pool where it is CPU-bound), and each image gets a `StageResult` that holds either a value or
the error that image hit, so one bad image is recorded and never fails its batch. `ImageBatch` then writes
the stage's catalog rows and per-image status in one transaction, appends the rows to the lake table, and
records per-image checks; the stage returns a `StageReport` (counts, timings, check summaries) that the
orchestrator shows. The same functions serve the Dagster assets, `imago ingest` and the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from imago_pipeline.core.catalog import Catalog, CheckOutcome, StageOutcome
from imago_pipeline.core.catalog.models import Image
from imago_pipeline.core.enrichment.decode import InvalidImage
from imago_pipeline.core.stores.blobs import BlobStore
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_tables import LakeTable

IMAGE_PARTITIONS = "images"  # the orchestrator's name for the set of image ids (Dagster's dynamic partitions)
STAGES = ("exif", "thumbnail", "ocr", "embedding", "classification", "vision")
SUMMARY = "image_summary"
# Within one image: classification reads the embedding, vision reads every other stage's result, and the
# summary reads all of them.
DOWNSTREAM = ({stage: (stage, "vision", SUMMARY) for stage in STAGES}
              | {"embedding": ("embedding", "classification", "vision", SUMMARY),
                 "vision": ("vision", SUMMARY), SUMMARY: (SUMMARY,)})


def with_downstream(stages) -> tuple[str, ...]:
    """The stages and everything that reads them, in pipeline order."""
    wanted = {s for stage in stages for s in DOWNSTREAM[stage]}
    return tuple(s for s in (*STAGES, SUMMARY) if s in wanted)


@dataclass(frozen=True)
class StageInput:
    """Where one image's bytes are, and the limits its work runs under (picklable: it goes to a worker)."""

    image_id: int
    tenant_id: int
    blob_key: str
    store: BlobStore
    max_pixels: int
    thumbnail_size: int
    ocr_languages: str


@dataclass(frozen=True)
class StageResult:
    image_id: int
    tenant_id: int
    value: Any = None
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_one(item: StageInput, work: Callable[[StageInput], Any]) -> StageResult:
    """`work(item)` as a result: a value, or the error this one image hit."""
    started = time.perf_counter()
    try:
        value, error = work(item), None
    except InvalidImage as exc:
        value, error = None, str(exc)
    except Exception as exc:  # one image's surprise must not cost the batch
        value, error = None, f"{type(exc).__name__}: {exc}"
    return StageResult(item.image_id, item.tenant_id, value, error, (time.perf_counter() - started) * 1000)


def worker_crashed(item: StageInput) -> StageResult:
    return StageResult(item.image_id, item.tenant_id, None, "the decoder crashed on this file")


Mapper = Callable[..., list]  # (fn, items, on_crash=…) -> results: the worker pool's map


@dataclass(frozen=True)
class CheckReport:
    """One data-quality check over the batch (recorded per image in the catalog, summarised here)."""

    name: str
    description: str
    outcomes: list[CheckOutcome]
    severity: Literal["error", "warn"] = "error"

    @property
    def failed(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass
class StageReport:
    """What a stage did to a batch: counts and timings only (no file names, GPS or text)."""

    stage: str
    code_version: str
    results: list[StageResult]
    missing: int  # ids of the batch no longer in the catalog (erased since they were queued)
    seconds: float
    lake_files: int = 0
    checks: list[CheckReport] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    def metrics(self) -> dict[str, Any]:
        work_ms = sorted(r.duration_ms for r in self.results) or [0.0]
        return {
            "images": len(self.results), "succeeded": len(self.results) - self.failed, "failed": self.failed,
            "missing_from_catalog": self.missing, "duration_s": round(self.seconds, 3),
            "images_per_s": round(len(self.results) / self.seconds, 2) if self.seconds else 0.0,
            "p50_image_ms": round(work_ms[len(work_ms) // 2], 1), "max_image_ms": round(work_ms[-1], 1),
            "lake_files_written": self.lake_files, "code_version": self.code_version, **self.extra,
        }


class ImageBatch:
    """The images of one run for one stage, and what the stage writes for them."""

    def __init__(self, catalog: Catalog, lake: Lake, *, stage: str, code_version: str, image_ids: Sequence[int],
                 run_id: str):
        self.catalog, self.lake, self.stage, self.code_version = catalog, lake, stage, code_version
        self.run_id = run_id
        self.ids = list(image_ids)
        self.images: dict[int, Image] = catalog.work.images_by_id(self.ids)  # an image erased since is absent
        self.started = time.perf_counter()
        self.lake_seconds = 0.0

    def inputs(self, store: BlobStore, *, max_pixels: int, thumbnail_size: int, ocr_languages: str
               ) -> list[StageInput]:
        return [StageInput(image_id=i.id, tenant_id=i.tenant_id, blob_key=i.blob_key, store=store,
                           max_pixels=max_pixels, thumbnail_size=thumbnail_size, ocr_languages=ocr_languages)
                for i in self.images.values()]

    def save(self, results: Sequence[StageResult], table: type | None, rows: list[dict[str, Any]]) -> None:
        """The stage's catalog rows and each image's stage status, in one transaction."""
        outcomes = [StageOutcome(r.image_id, r.tenant_id, "done" if r.ok else "failed", r.error, r.duration_ms)
                    for r in results]
        self.catalog.results.save_stage(self.stage, outcomes, table, rows, run_id=self.run_id,
                                        code_version=self.code_version)

    def to_lake(self, table: LakeTable, rows: list[dict[str, Any]]) -> int:
        """Append rows to a lake table (one file per tenant and day); returns the files written."""
        # An image erased while this run was working on it must not come back through the lake: rows of
        # images gone are left out, and an image erased between that look and the write (after its
        # erasure went through the lake) has its row deleted again; one erased later is the erasure's.
        started = time.perf_counter()
        alive = set(self.catalog.work.images_by_id([row["image_id"] for row in rows]))
        files = self.lake.write_batch(
            table.name,
            [{**{k: v for k, v in row.items() if k in table.schema.names}, "run_id": self.run_id,
              "tenant_id": image.tenant_id, "date": image.created_at.date()}
             for row in rows if row["image_id"] in alive for image in [self.images[row["image_id"]]]],
            batch_id=self.run_id.replace("-", ""), schema=table.schema)
        erased_meanwhile = alive - set(self.catalog.work.images_by_id(list(alive)))
        if erased_meanwhile:
            self.lake.delete_rows(table.name, "image_id", erased_meanwhile)
        self.lake_seconds += time.perf_counter() - started
        return len(files)

    def check(self, name: str, outcomes: list[CheckOutcome], *, description: str,
              severity: Literal["error", "warn"] = "error") -> CheckReport:
        """Record a per-image check in the catalog (for the API) and summarise it (counts only)."""
        self.catalog.results.save_checks(name, outcomes)
        return CheckReport(name, description, outcomes, severity)

    def report(self, results: list[StageResult], *, lake_files: int = 0, checks: Sequence[CheckReport] = (),
               **extra: Any) -> StageReport:
        return StageReport(self.stage, self.code_version, results, len(self.ids) - len(self.images),
                           time.perf_counter() - self.started, lake_files, list(checks),
                           {**extra, "lake_write_s": round(self.lake_seconds, 3)})
