"""The kNN monitor: the accuracy of the encoder during training, on fixed subsets."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from ..data import DataSplits, class_balanced_indices
from .features import extract_features, feature_options
from .knn import knn_accuracy


class Monitor:
    """kNN monitor on fixed, class-balanced subsets of the train and test splits."""

    def __init__(self, cfg: Config, splits: DataSplits, device: torch.device) -> None:
        n_bank = min(cfg.eval.monitor_train, len(splits.train))
        n_query = min(cfg.eval.monitor_test, len(splits.test))
        bank = class_balanced_indices(splits.train.labels, n_bank, seed=0)
        query = class_balanced_indices(splits.test.labels, n_query, seed=0)
        self.bank_images = splits.train.images[bank]
        self.bank_labels = torch.from_numpy(splits.train.labels[bank])
        self.query_images = splits.test.images[query]
        self.query_labels = torch.from_numpy(splits.test.labels[query])
        self.num_classes = len(splits.train.classes)
        self.cfg = cfg
        self.options = feature_options(cfg, device)

    def __call__(self, encoder: nn.Module) -> float:
        """Top-1 kNN accuracy (a fraction) of the encoder's features on the fixed subsets."""
        e = self.cfg.eval
        bank = extract_features(encoder, self.bank_images, **self.options)
        query = extract_features(encoder, self.query_images, **self.options)
        return knn_accuracy(
            bank, self.bank_labels, query, self.query_labels, self.num_classes, e.knn_k, e.knn_temperature
        )
