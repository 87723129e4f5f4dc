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

    def __init__(
        self, cfg: Config, splits: DataSplits, device: torch.device, train_images: torch.Tensor | None = None
    ) -> None:
        """Pick the subsets once.

        Args:
            cfg: The run's config (eval.monitor_* sizes, kNN settings, feature options).
            splits: The training data (the bank) and the test split (the queries).
            device: Where to encode.
            train_images: ``splits.train.images`` already on ``device`` (training keeps
                them there): the bank is taken from it rather than uploaded again.
        """
        n_bank = min(cfg.eval.monitor_train, len(splits.train))
        n_query = min(cfg.eval.monitor_test, len(splits.test))
        bank = class_balanced_indices(splits.train.labels, n_bank, seed=0)
        query = class_balanced_indices(splits.test.labels, n_query, seed=0)
        if train_images is not None:
            self.bank_images = train_images.index_select(0, torch.from_numpy(bank).to(train_images.device))
        else:
            self.bank_images = torch.from_numpy(splits.train.images[bank]).to(device)
        self.bank_labels = torch.from_numpy(splits.train.labels[bank])
        self.query_images = torch.from_numpy(splits.test.images[query]).to(device)  # uploaded once
        self.query_labels = torch.from_numpy(splits.test.labels[query])
        self.num_classes = len(splits.train.classes)
        self.cfg = cfg
        self.every = cfg.train.knn_every
        self.options = feature_options(cfg, device)

    def __call__(self, model: nn.Module, epoch: float = 0.0) -> dict[str, float]:
        """``{"knn_top1": fraction}``: kNN accuracy of the encoder's features on the fixed subsets."""
        return {"knn_top1": self.knn_top1(getattr(model, "backbone", model))}

    def knn_top1(self, encoder: nn.Module) -> float:
        """Top-1 kNN accuracy (a fraction) of ``encoder``'s features on the fixed subsets."""
        e = self.cfg.eval
        bank = extract_features(encoder, self.bank_images, **self.options)
        query = extract_features(encoder, self.query_images, **self.options)
        return knn_accuracy(
            bank, self.bank_labels, query, self.query_labels, self.num_classes, e.knn_k, e.knn_temperature
        )
