"""Losses against NumPy references written from the papers' pseudocode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from selfsup.losses import info_nce, nt_xent, softmax_mse


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """SimCLR Algorithm 1, literally: views interleaved as z_{2k-1}, z_{2k}."""
    n = len(z1)
    z = np.empty((2 * n, z1.shape[1]))
    z[0::2], z[1::2] = z1, z2  # z[2k] and z[2k+1] are the two views of image k

    def s(i: int, j: int) -> float:
        return float(z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j])))

    def ell(i: int, j: int) -> float:
        denom = sum(math.exp(s(i, k) / tau) for k in range(2 * n) if k != i)
        return -math.log(math.exp(s(i, j) / tau) / denom)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("n,d", [(2, 3), (5, 8), (16, 32)])
@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_nt_xent_matches_algorithm_1(n: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(n * 100 + d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got = nt_xent(torch.tensor(z1, dtype=torch.float64), torch.tensor(z2, dtype=torch.float64), tau)
    assert abs(float(got) - nt_xent_reference(z1, z2, tau)) < 1e-5


def test_nt_xent_exact_value() -> None:
    # Views identical and the two images orthogonal: each anchor has its positive at
    # similarity 1 and two negatives at 0, so the loss is log(1 + 2 exp(-1/t)).
    e = torch.eye(2)
    tau = 0.5
    expected = math.log(1 + 2 * math.exp(-1 / tau))
    assert float(nt_xent(e, e.clone(), tau)) == pytest.approx(expected, abs=1e-6)


def test_nt_xent_is_scale_invariant_and_differentiable() -> None:
    z1 = torch.randn(4, 6, requires_grad=True)
    z2 = torch.randn(4, 6)
    loss = nt_xent(z1, z2, 0.2)
    loss.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    assert float(nt_xent(3 * z1.detach(), z2, 0.2)) == pytest.approx(loss.item(), abs=1e-5)


def test_nt_xent_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4), 0.1)


def info_nce_reference(q: np.ndarray, k: np.ndarray, queue: np.ndarray, tau: float) -> float:
    """MoCo's Algorithm 1: logits [q.k+, q.queue] / t, cross-entropy with label 0."""
    total = 0.0
    for i in range(len(q)):
        qi = q[i] / np.linalg.norm(q[i])
        ki = k[i] / np.linalg.norm(k[i])
        logits = np.concatenate([[qi @ ki], queue @ qi]) / tau
        total += -(logits[0] - np.log(np.exp(logits).sum()))
    return total / len(q)


@pytest.mark.parametrize("n,k_size,tau", [(3, 5, 0.2), (8, 32, 0.07)])
def test_info_nce_matches_reference(n: int, k_size: int, tau: float) -> None:
    rng = np.random.default_rng(k_size)
    q, k = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    queue = rng.normal(size=(k_size, 6))
    queue /= np.linalg.norm(queue, axis=1, keepdims=True)
    got = info_nce(*(torch.tensor(a) for a in (q, k, queue)), tau)
    assert abs(float(got) - info_nce_reference(q, k, queue, tau)) < 1e-5


def test_softmax_mse_reference() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 10)), rng.normal(size=(4, 10))
    pa = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    pb = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    expected = ((pa - pb) ** 2).mean()
    assert float(softmax_mse(torch.tensor(a), torch.tensor(b))) == pytest.approx(expected, abs=1e-7)
    assert float(softmax_mse(torch.tensor(a), torch.tensor(a))) == 0.0
