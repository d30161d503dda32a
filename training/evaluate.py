"""Classification metrics for the three labels, without extra dependencies.

Besides accuracy, the card reports what the product promises: accuracy on photos of cats and dogs (`pet_accuracy`)
and the share of everything else labelled `other` (`other_recall`). The promotion gate compares
`balanced_accuracy` (the mean of the per-label recalls), so a validation set with many more pets than other
images cannot hide a head that forgets `other`.
"""

from __future__ import annotations

import numpy as np

from imago_pipeline.core.embedding.head import LABELS

GATE_METRIC = "balanced_accuracy"


def metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """`labels`: true label indices; `probabilities`: (N, len(LABELS)) from the head."""
    labels = np.asarray(labels, dtype=int)
    predicted = np.asarray(probabilities).argmax(axis=1)
    n = len(LABELS)
    confusion = np.zeros((n, n), dtype=int)  # rows: true label, columns: predicted label
    np.add.at(confusion, (labels, predicted), 1)
    per_label = {}
    for i, label in enumerate(LABELS):
        support, called = int(confusion[i].sum()), int(confusion[:, i].sum())
        per_label[label] = {"support": support,
                            "precision": round(confusion[i, i] / called, 4) if called else None,
                            "recall": round(confusion[i, i] / support, 4) if support else None}
    recalls = [v["recall"] for v in per_label.values() if v["recall"] is not None]
    pets = labels < LABELS.index("other")
    other = labels == LABELS.index("other")
    return {
        "images": len(labels),
        "accuracy": round(float((predicted == labels).mean()), 4) if len(labels) else 0.0,
        GATE_METRIC: round(float(np.mean(recalls)), 4) if recalls else 0.0,
        "pet_accuracy": round(float((predicted[pets] == labels[pets]).mean()), 4) if pets.any() else None,
        "other_recall": round(float((predicted[other] == labels[other]).mean()), 4) if other.any() else None,
        "per_label": per_label,
        "confusion_matrix": {"labels": list(LABELS), "rows_true_columns_predicted": confusion.tolist()},
    }
