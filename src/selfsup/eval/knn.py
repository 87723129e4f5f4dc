"""Weighted k-nearest-neighbour classification of features (Wu et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.inference_mode()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predict test labels by a vote of the k most cosine-similar training samples.

    Each neighbour votes for its class with weight ``exp(similarity / temperature)``.

    Args:
        train_features: (N, D) bank features.
        train_labels: (N,) int64 bank labels.
        test_features: (M, D) query features.
        num_classes: C.
        k: Neighbours per query (capped at N).
        temperature: Vote temperature.
        chunk_size: Queries per similarity block (bounds memory to chunk x N).

    Returns:
        (M,) int64 predicted labels.
    """
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(bank.device)
    k = min(k, len(bank))
    preds = []
    for start in range(0, len(test_features), chunk_size):
        q = F.normalize(test_features[start : start + chunk_size].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (c, k)
        weights = (sim / temperature).exp()
        votes = torch.zeros(len(q), num_classes, device=bank.device)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (a fraction) of :func:`knn_predict` on labelled queries."""
    pred = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return float((pred.cpu() == test_labels.cpu()).float().mean())
