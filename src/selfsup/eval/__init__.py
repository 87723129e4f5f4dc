"""Evaluation of a frozen encoder: weighted kNN and a linear probe on cached features.

>>> from selfsup.eval import evaluate_run
>>> evaluate_run("runs/quick")["linear_top1"]
0.55...

Features of the train and test splits are extracted once, without augmentation, and
both classifiers use them; results land in ``RUN_DIR/metrics.json``.
"""

from .evaluate import (
    Trained,
    Which,
    classifier_accuracies,
    evaluate_classifiers,
    evaluate_encoder,
    evaluate_features,
    evaluate_milestones,
    evaluate_run,
    load_run_model,
    result_line,
)
from .features import extract_features, feature_options
from .knn import knn_accuracy, knn_predict
from .linear import ProbeResult, ProbeSettings, linear_probe

__all__ = [
    "Trained",
    "Which",
    "ProbeResult",
    "classifier_accuracies",
    "evaluate_classifiers",
    "evaluate_encoder",
    "evaluate_features",
    "evaluate_milestones",
    "evaluate_run",
    "extract_features",
    "feature_options",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "ProbeSettings",
    "load_run_model",
    "result_line",
]
