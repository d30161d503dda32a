"""How a list of image partitions becomes runs: shared by the upload sensor and `imago ingest`.

A run over a *range* of dynamic partitions covers every key between its start and end in the order the
keys were added, so only keys added together, in one request, form a safe range. Keys that already
existed (an image queued again) get a run of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imago_pipeline.dagster_internals import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG


@dataclass(frozen=True)
class PartitionRange:
    keys: list[str]
    ranged: bool = field(default=True)

    @property
    def tags(self) -> dict[str, str]:
        if not self.ranged:
            return {}
        return {ASSET_PARTITION_RANGE_START_TAG: self.keys[0], ASSET_PARTITION_RANGE_END_TAG: self.keys[-1],
                "imago/batch_size": str(len(self.keys))}

    @property
    def partition_key(self) -> str | None:
        return None if self.ranged else self.keys[0]

    @property
    def run_key(self) -> str:
        return f"images-{self.keys[0]}-{self.keys[-1]}"


def plan_ranges(new_keys: list[str], known_keys: list[str], batch_size: int) -> list[PartitionRange]:
    """`new_keys` are about to be added in this order, in one request; `known_keys` already exist."""
    batches = [PartitionRange(new_keys[i:i + batch_size]) for i in range(0, len(new_keys), batch_size)]
    return batches + [PartitionRange([key], ranged=False) for key in known_keys]


def split_new_and_known(instance, partitions_name: str, keys: list[str]) -> tuple[list[str], list[str]]:
    """Which keys are not yet partitions (to add, in order) and which already are: membership queries over
    these keys (in chunks), never the whole partition list."""
    existing = set(instance.get_existing_dynamic_partitions(partitions_name, keys)) if keys else set()
    return [k for k in keys if k not in existing], [k for k in keys if k in existing]


def plan_claimed_ranges(instance, partitions_name: str, taken: list[tuple[int, tuple[str, ...] | None]],
                         batch_size: int) -> tuple[list[tuple[tuple[str, ...] | None, PartitionRange]], list[str]]:
    """Batches for images taken into work: [(stages to materialize or None for all, batch)], and the keys to
    add as partitions (in this order, in one request).

    Images are grouped by the stages they redo. A group's images that are not partitions yet are added
    together, so they form ranges of their own; those that are get ranges over the existing partition order
    that never span an image outside the group (the full partition list is read only then)."""
    groups: dict[tuple[str, ...] | None, list[str]] = {}
    for image_id, stages in taken:
        groups.setdefault(stages, []).append(str(image_id))
    new_keys: list[str] = []
    planned: list[tuple[tuple[str, ...] | None, PartitionRange]] = []
    order: list[str] | None = None
    for stages, keys in sorted(groups.items(), key=lambda item: (item[0] is not None, item[0] or ())):
        fresh, known = split_new_and_known(instance, partitions_name, keys)
        new_keys += fresh
        planned += [(stages, b) for b in plan_ranges(fresh, [], batch_size)]
        if known:
            order = order if order is not None else instance.get_dynamic_partitions(partitions_name)
            planned += [(stages, b) for b in contiguous_ranges(order, set(known), batch_size)]
    return planned, new_keys


def contiguous_ranges(order: list[str], targets: set[str], batch_size: int) -> list[PartitionRange]:
    """Ranged batches over existing partitions: runs of consecutive keys (in partition order) that are all
    targets, cut at `batch_size`. A range never spans an image that is not a target."""
    batches: list[PartitionRange] = []
    current: list[str] = []
    for key in order:
        if key in targets:
            current.append(key)
            if len(current) == batch_size:
                batches.append(PartitionRange(current))
                current = []
        elif current:
            batches.append(PartitionRange(current))
            current = []
    if current:
        batches.append(PartitionRange(current))
    return [b if len(b.keys) > 1 else PartitionRange(b.keys, ranged=False) for b in batches]
