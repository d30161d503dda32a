"""Classification metrics without extra dependencies: accuracy, precision, recall, ROC AUC, confusion."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random dog scores above a random cat (Mann-Whitney U, ties counted half)."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([positives, negatives])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = ranks[: len(positives)].sum()
    return float((rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    labels = labels.astype(int)
    predicted = (probabilities >= threshold).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    return {
        "images": len(labels),
        "accuracy": (tp + tn) / max(1, len(labels)),
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "roc_auc": roc_auc(labels, probabilities),
        # rows: true cat, true dog; columns: predicted cat, predicted dog
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
