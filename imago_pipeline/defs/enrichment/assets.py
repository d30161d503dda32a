"""Per-image assets: one Dagster partition per image id; a run materializes a range of them.

Each asset calls its stage in `imago_pipeline.core.enrichment.stages` and shows the stage's report: counts,
timings, engine and model versions, and its checks. File names, GPS and text never go into Dagster's
event log, which the retention purges do not reach.

Each asset's `code_version` names its logic version and, where a model or prompt is involved, that too:
changing one makes exactly the partitions materialized with the old version stale.
"""

import warnings
from typing import Any

import dagster as dg

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.claims import CLAIM_TAG
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.embedding.encoder import shared_encoder
from imago_pipeline.core.enrichment.batch import IMAGE_PARTITIONS, STAGES, SUMMARY, ImageBatch, StageReport
from imago_pipeline.core.enrichment.stages import classification as classification_stage
from imago_pipeline.core.enrichment.stages import embedding as embedding_stage
from imago_pipeline.core.enrichment.stages import exif as exif_stage
from imago_pipeline.core.enrichment.stages import ocr as ocr_stage
from imago_pipeline.core.enrichment.stages import summary as summary_stage
from imago_pipeline.core.enrichment.stages import thumbnail as thumbnail_stage
from imago_pipeline.core.enrichment.stages import vision as vision_stage
from imago_pipeline.core.enrichment.versions import SUMMARY_VERSION, stage_code_versions
from imago_pipeline.core.model_store import production_tag
from imago_pipeline.core.vision.factory import build_provider
from imago_pipeline.defs.execution import imago_executor
from imago_pipeline.defs.resources import (
    BlobStoreResource,
    CatalogResource,
    LakeResource,
    ModelStoreResource,
    SettingsResource,
    WorkerPoolResource,
)

# BackfillPolicy on assets is marked beta; it is what makes one run cover a range of images.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

image_partitions = dg.DynamicPartitionsDefinition(name=IMAGE_PARTITIONS)
VISION_POOL = "vision_provider"

uploads = dg.AssetSpec(
    "uploads",
    group_name="ingest",
    kinds={"sql", "folder"},
    description="Images registered through the API, the drop folder or `imago ingest`: bytes in the blob "
    "store, a `pending` row in the catalog. The upload sensor turns new rows into `images` partitions.",
)

_PER_IMAGE: dict[str, Any] = dict(
    partitions_def=image_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="enrichment",
    owners=["team:imago"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
)


def _batch(context: dg.AssetExecutionContext, catalog: CatalogResource, lake: LakeResource, stage: str,
           code_version: str) -> ImageBatch:
    return ImageBatch(catalog.get(), lake.get(), stage=stage, code_version=code_version,
                      image_ids=[int(key) for key in context.partition_keys], run_id=context.run_id)


def _inputs(batch: ImageBatch, blobs: BlobStoreResource, settings: ImagoSettings):
    return batch.inputs(blobs.get(), max_pixels=settings.max_pixels, thumbnail_size=settings.thumbnail_size,
                        ocr_languages=settings.ocr_languages)


def _result(context: dg.AssetExecutionContext, report: StageReport) -> dg.MaterializeResult:
    """The stage's report as Dagster shows it: metadata, and one check result per check."""
    if report.failed:
        context.log.warning(f"{report.stage}: {report.failed} of {len(report.results)} images failed; see their status")
    metadata = {k: dg.MetadataValue.float(v) if isinstance(v, float) else v for k, v in report.metrics().items()}
    checks = [dg.AssetCheckResult(
        check_name=check.name, passed=check.passed, description=check.description,
        severity=dg.AssetCheckSeverity.WARN if check.severity == "warn" else dg.AssetCheckSeverity.ERROR,
        metadata={"checked": len(check.outcomes), "failed": len(check.failed),
                  "failed_image_ids": dg.MetadataValue.text(",".join(str(o.image_id) for o in check.failed[:50]))})
        for check in report.checks]
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def code_versions(settings: ImagoSettings) -> dict[str, str]:
    """The stages' code versions when the code location loads (the classifier's from the registry, which
    must not stop the code location from loading when the catalog is down)."""
    from training.registry import BASELINE

    try:
        catalog: Catalog | None = Catalog.connect(settings.catalog_url)
    except Exception:  # the code location must load even when the catalog is down
        catalog = None
    return stage_code_versions(settings, production_tag(catalog, BASELINE))


def build_image_assets(settings: ImagoSettings) -> list[dg.AssetsDefinition]:
    """The per-image assets, with code versions that follow the configured OCR languages and vision model."""
    versions = code_versions(settings)

    @dg.asset(deps=[uploads], kinds={"python", "pillow", "parquet"}, code_version=versions["exif"],
              check_specs=[dg.AssetCheckSpec(exif_stage.CHECK, asset="exif", description=exif_stage.CHECK_DESCRIPTION)],
              **_PER_IMAGE)
    def exif(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
             lake: LakeResource, settings: SettingsResource, worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """Camera metadata (make, model, lens, exposure, capture date with its UTC offset, GPS, orientation)
        read from the original file into the catalog's `exif` table and the lake's `exif` dataset."""
        batch = _batch(context, catalog, lake, "exif", versions["exif"])
        return _result(context, exif_stage.run(batch, _inputs(batch, blobs, settings.get()), worker_pool.map))

    @dg.asset(deps=[uploads], kinds={"python", "pillow", "jpeg"}, code_version=versions["thumbnail"],
              check_specs=[dg.AssetCheckSpec(thumbnail_stage.CHECK, asset="thumbnail",
                                             description="Every stored thumbnail decodes at its recorded size")],
              **_PER_IMAGE)
    def thumbnail(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                  lake: LakeResource, settings: SettingsResource,
                  worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """An upright (EXIF-orientation-corrected) JPEG of at most 256 px, stored as a blob."""
        batch = _batch(context, catalog, lake, "thumbnail", versions["thumbnail"])
        return _result(context, thumbnail_stage.run(batch, _inputs(batch, blobs, settings.get()), worker_pool.map,
                                                    blobs.get()))

    @dg.asset(deps=[uploads], kinds={"python", "tesseract", "onnx", "parquet"}, code_version=versions["ocr"],
              check_specs=[dg.AssetCheckSpec(ocr_stage.CHECK, asset="ocr", description=ocr_stage.CHECK_DESCRIPTION)],
              **_PER_IMAGE)
    def ocr(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
            lake: LakeResource, settings: SettingsResource, worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """Text in the image, with mean word confidence, language and word boxes: pages and lines read by
        Tesseract (turned upright first), photos (signs, labels) by RapidOCR, whose text detector is also the
        cheap probe of photos without text (docs/ocr.md). One reader per core. When the confidence is low
        and a remote vision provider is configured, it re-reads the text (`engine` says who read it)."""
        config = settings.get()
        batch = _batch(context, catalog, lake, "ocr", versions["ocr"])
        return _result(context, ocr_stage.run(
            batch, _inputs(batch, blobs, config), worker_pool.map, store=blobs.get(), provider=build_provider(config),
            fallback_below=config.ocr_fallback_confidence, languages=config.ocr_languages))

    @dg.asset(deps=[uploads], kinds={"python", "onnx", "parquet"}, code_version=versions["embedding"], **_PER_IMAGE)
    def embedding(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                  lake: LakeResource, settings: SettingsResource,
                  worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """What the pretrained backbone (EfficientNet-Lite0, ImageNet weights, onnxruntime) sees in the upright
        image: a 1280-d embedding and the top ImageNet classes, for classification, similar images,
        duplicates and the offline tags. Decoding runs on the worker pool, the backbone once per batch."""
        batch = _batch(context, catalog, lake, "embedding", versions["embedding"])
        return _result(context, embedding_stage.run(batch, _inputs(batch, blobs, settings.get()), worker_pool.map,
                                                    shared_encoder()))

    @dg.asset(deps=[embedding], kinds={"python", "numpy", "parquet"}, code_version=versions["classification"],
              **_PER_IMAGE)
    def classification(context: dg.AssetExecutionContext, catalog: CatalogResource, lake: LakeResource,
                       models: ModelStoreResource) -> dg.MaterializeResult:
        """Cat, dog or other, with every label's probability, from the image's stored embedding and the
        production head of the registry (trained in Keras, served in numpy). The code version names the
        head, so a promotion makes older classifications stale, and redoing them reads stored embeddings
        without running the backbone again."""
        store = models.get()
        model = store.production()
        batch = _batch(context, catalog, lake, "classification", versions["classification"])
        return _result(context, classification_stage.run(batch, store.head(model), model.version))

    @dg.asset(deps=[exif, thumbnail, ocr, embedding, classification], kinds={"python", "gemini", "parquet"},
              code_version=versions["vision"], pool=VISION_POOL,
              check_specs=[dg.AssetCheckSpec(vision_stage.CHECK, asset="vision",
                                             description="Description, tags and confidence match the schema")],
              **_PER_IMAGE)
    def vision(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
               lake: LakeResource, settings: SettingsResource) -> dg.MaterializeResult:
        """A description and tags for each image from the configured provider: `local` (offline default, from
        what the backbone sees, the classification, EXIF, OCR, colours and orientation) or `gemini`
        (structured JSON output, retried on 429 and 5xx, limited by the `vision_provider` concurrency pool)."""
        batch = _batch(context, catalog, lake, "vision", versions["vision"])
        return _result(context, vision_stage.run(batch, blobs.get(), build_provider(settings.get())))

    @dg.asset(deps=[exif, thumbnail, ocr, embedding, classification, vision], kinds={"python", "parquet"},
              code_version=SUMMARY_VERSION, **_PER_IMAGE)
    def image_summary(context: dg.AssetExecutionContext, catalog: CatalogResource,
                      lake: LakeResource) -> dg.MaterializeResult:
        """Each image's overall status from its stages (done, or failed with the stage and reason), and the
        lake's `images` dataset: one row per image and batch, without file names."""
        counts = summary_stage.run(catalog.get(), lake.get(), [int(key) for key in context.partition_keys],
                                   run_id=context.run_id, claim=context.run.tags.get(CLAIM_TAG))
        return dg.MaterializeResult(metadata={**counts, "duration_s": dg.MetadataValue.float(counts["duration_s"])})

    return [exif, thumbnail, ocr, embedding, classification, vision, image_summary]


PER_IMAGE_ASSET_KEYS = (*STAGES, SUMMARY)

process_images_job = dg.define_asset_job(
    "process_images",
    selection=dg.AssetSelection.assets(*PER_IMAGE_ASSET_KEYS),
    partitions_def=image_partitions,
    # One process per run, its images spread over the cores by the assets themselves; or, with
    # IMAGO_EXECUTOR=celery, each step on a Celery worker of any machine (defs/execution.py).
    executor_def=imago_executor,
    description="Enrich a batch of images: EXIF, thumbnail, OCR, embedding, classification, vision, then each "
    "image's overall status.",
)
