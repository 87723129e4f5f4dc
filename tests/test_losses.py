"""Losses against NumPy references written from the papers' pseudocode."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import (
    barlow_twins,
    dino,
    dino_teacher_entropy,
    embedding_std,
    fixmatch_unlabeled,
    info_nce,
    margin_triplet,
    negative_cosine,
    normalized_mse,
    nt_logistic,
    nt_xent,
    softmax_mse,
    vicreg,
    vicreg_terms,
)


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


def dcl_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """DCL (Yeh et al. 2022, Eq. 3), literally: the positive out of the denominator."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        negatives = [math.exp(z[i] @ z[k] / tau) for k in range(2 * n) if k not in (i, p)]
        total += -z[i] @ z[p] / tau + math.log(sum(negatives))
    return total / (2 * n)


@pytest.mark.parametrize("n,d", [(2, 3), (5, 8)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_decoupled_nt_xent_matches_reference(n: int, d: int, tau: float) -> None:
    rng = np.random.default_rng(n * 10 + d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got = nt_xent(torch.tensor(z1), torch.tensor(z2), tau, decoupled=True)
    assert float(got) == pytest.approx(dcl_reference(z1, z2, tau), abs=1e-6)
    # The positive's share of the denominator is what DCL removes: NT-Xent is larger.
    assert float(nt_xent(torch.tensor(z1), torch.tensor(z2), tau)) > float(got)


def test_decoupled_nt_xent_under_bf16_autocast() -> None:
    # Under autocast the similarities come out in bf16; the loss must still run and be float32.
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(z1, z2, 0.2, decoupled=True)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(nt_xent(z1, z2, 0.2, decoupled=True)), abs=0.1)


def test_decoupled_nt_xent_exact_value() -> None:
    # Views identical, two orthogonal images: the positive at similarity 1, two negatives
    # at 0, so each anchor's loss is -1/t + log 2.
    e = torch.eye(2)
    assert float(nt_xent(e, e.clone(), 0.5, decoupled=True)) == pytest.approx(-2 + math.log(2), abs=1e-6)


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


def pair_losses_reference(
    z1: np.ndarray, z2: np.ndarray, tau: float, margin: float, semi_hard: bool
) -> tuple[float, float]:
    """NT-Logistic and margin triplet (SimCLR Table 2), anchor by anchor in plain Python."""
    n = len(z1)
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    logistic, triplet = 0.0, 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        sp = float(z[i] @ z[p])
        negs = [float(z[i] @ z[k]) for k in range(2 * n) if k not in (i, p)]
        log_negs = [s for s in negs if s < sp] if semi_hard else negs
        tri_negs = [s for s in negs if sp - margin < s < sp] if semi_hard else negs
        term = -math.log(1 / (1 + math.exp(-sp / tau)))
        if log_negs:
            term += -sum(math.log(1 / (1 + math.exp(s / tau))) for s in log_negs) / len(log_negs)
        logistic += term
        if tri_negs:
            triplet += sum(max(s - sp + margin, 0.0) for s in tri_negs) / len(tri_negs)
    return logistic / (2 * n), triplet / (2 * n)


@pytest.mark.parametrize("n,d", [(2, 3), (5, 8), (16, 32)])
@pytest.mark.parametrize("semi_hard", [False, True])
def test_nt_logistic_and_margin_triplet_match_the_reference(n: int, d: int, semi_hard: bool) -> None:
    rng = np.random.default_rng(n * 7 + d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    for tau, margin in [(0.2, 0.5), (1.0, 1.0)]:
        logistic, triplet = pair_losses_reference(z1, z2, tau, margin, semi_hard)
        got_l = nt_logistic(torch.tensor(z1), torch.tensor(z2), tau, semi_hard=semi_hard)
        got_t = margin_triplet(torch.tensor(z1), torch.tensor(z2), margin, semi_hard=semi_hard)
        assert abs(float(got_l) - logistic) < 1e-5 and abs(float(got_t) - triplet) < 1e-5


def test_nt_logistic_and_margin_triplet_closed_forms() -> None:
    # Orthonormal images, identical views: positives at similarity 1, negatives at 0.
    e = torch.eye(4)
    tau, m = 0.5, 0.3
    expected = -math.log(1 / (1 + math.exp(-1 / tau))) - math.log(0.5)
    assert float(nt_logistic(e, e.clone(), tau)) == pytest.approx(expected, abs=1e-6)
    assert float(margin_triplet(e, e.clone(), m)) == 0.0  # every negative beyond the margin
    # Collapsed: every similarity 1, each negative violates the margin by exactly m.
    ones = torch.ones(3, 5)
    assert float(margin_triplet(ones, ones.clone(), m)) == pytest.approx(m, abs=1e-6)
    assert float(nt_logistic(ones, ones.clone(), tau)) == pytest.approx(
        -math.log(1 / (1 + math.exp(-2))) - math.log(1 / (1 + math.exp(2))), abs=1e-6
    )
    with pytest.raises(ValueError, match="must both be"):
        nt_logistic(torch.randn(3, 4), torch.randn(2, 4), 0.1)


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


# ---- BYOL, SimSiam, Barlow Twins, VICReg, DINO, FixMatch: NumPy references from the papers ----

SIZES = [(4, 3), (8, 16), (32, 64)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("n,d", SIZES)
def test_normalized_mse_and_negative_cosine_match_their_pseudocode(n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    p, z = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    cos = (_unit(p) * _unit(z)).sum(1)
    # BYOL (its Algorithm 1): 2 - 2 <p/|p|, z/|z|>, mean over the batch.
    assert abs(float(normalized_mse(_t(p), _t(z))) - float(np.mean(2 - 2 * cos))) < 1e-5
    # SimSiam (its Algorithm 1): D(p, z) = -(normalize(p) * normalize(z)).sum(dim=1).mean().
    assert abs(float(negative_cosine(_t(p), _t(z))) - float(-np.mean(cos))) < 1e-5


def test_byol_and_simsiam_closed_forms() -> None:
    z = torch.randn(6, 5, dtype=torch.float64)
    assert float(normalized_mse(z, 3 * z)) == pytest.approx(0.0, abs=1e-6)  # identical directions
    assert float(normalized_mse(z, -z)) == pytest.approx(4.0, abs=1e-6)
    assert float(negative_cosine(z, 2 * z)) == pytest.approx(-1.0, abs=1e-6)
    e = torch.eye(4, dtype=torch.float64)
    assert float(negative_cosine(e, e.roll(1, 0))) == pytest.approx(0.0, abs=1e-12)  # orthogonal
    assert float(normalized_mse(e, e.roll(1, 0))) == pytest.approx(2.0, abs=1e-12)
    # SimSiam's stop-gradient: nothing flows into z.
    p, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    negative_cosine(p, t).backward()
    assert t.grad is None and p.grad is not None


def barlow_reference(z1: np.ndarray, z2: np.ndarray, lambd: float) -> float:
    """Barlow Twins' Algorithm 1, normalised along the batch as its code's BatchNorm does (population var + 1e-5)."""
    n = len(z1)
    z1n = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + 1e-5)
    z2n = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + 1e-5)
    c = z1n.T @ z2n / n
    d = c.shape[0]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            loss += (1 - c[i, j]) ** 2 if i == j else lambd * c[i, j] ** 2
    return loss


@pytest.mark.parametrize("n,d", SIZES)
@pytest.mark.parametrize("lambd", [5e-3, 0.1])
def test_barlow_twins_matches_algorithm_1(n: int, d: int, lambd: float) -> None:
    rng = np.random.default_rng(n * d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    assert abs(float(barlow_twins(_t(z1), _t(z2), lambd)) - barlow_reference(z1, z2, lambd)) < 1e-5


def test_barlow_twins_closed_form() -> None:
    # Identical views whose dimensions are uncorrelated over the batch (orthogonal columns):
    # the cross-correlation is the identity, the loss 0.
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    z = h[:, 1:]  # three zero-mean, mutually orthogonal columns of variance 1
    c = 1 / (1 + 1e-5)  # BatchNorm's eps: c_ii = var / (var + eps)
    assert float(barlow_twins(_t(z), _t(z), 0.5)) == pytest.approx(3 * (1 - c) ** 2, abs=1e-12)
    # Anti-correlated views: each diagonal term is (1 - (-c))^2, about 4.
    assert float(barlow_twins(_t(z), _t(-z), 0.5)) == pytest.approx(3 * (1 + c) ** 2, rel=1e-6)  # float32


def _finite_with_gradients(loss_fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> float:
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    loss.backward()
    assert torch.isfinite(loss), loss
    grads = [x.grad for x in leaves if x.grad is not None]  # a stop-gradient target has none
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return float(loss.detach())


def test_barlow_twins_constant_dimension_is_finite() -> None:
    """A dimension constant over the batch standardises to 0 (as BatchNorm does), not NaN."""
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    z = np.concatenate([h[:, 1:], np.full((4, 1), 3.0)], axis=1)  # the last dimension is constant
    loss = _finite_with_gradients(lambda a, b: barlow_twins(a, b, 0.5), _t(z), _t(z))
    assert loss == pytest.approx(1.0, abs=1e-6)  # (1 - 0)^2 for the constant dimension, ~0 for the rest


def test_losses_on_a_batch_of_identical_images() -> None:
    """Every embedding the same (a batch of one image repeated): each loss stays finite, with finite gradients."""
    same = torch.ones(6, 8) * torch.linspace(-1, 1, 8)
    assert _finite_with_gradients(lambda a, b: barlow_twins(a, b), same, same) == pytest.approx(8.0, abs=1e-4)
    assert _finite_with_gradients(lambda a, b: sum(vicreg_terms(a, b)), same, same) > 0
    assert _finite_with_gradients(lambda a, b: nt_xent(a, b, 0.5), same, same) == pytest.approx(math.log(11), abs=1e-4)
    assert _finite_with_gradients(lambda a, b: info_nce(a, b, F.normalize(same, dim=1), 0.2), same, same) > 0
    assert _finite_with_gradients(lambda a, b: normalized_mse(a, b), same, same) == pytest.approx(0.0, abs=1e-6)
    assert _finite_with_gradients(lambda a, b: negative_cosine(a, b), same, same) == pytest.approx(-1.0, abs=1e-6)
    center = torch.zeros(8)
    assert _finite_with_gradients(lambda a, b: dino([a, a], [b, b], center, 0.1, 0.04), same, same) > 0
    zeros = torch.zeros(6, 8)  # collapsed to the origin: normalisations divide by their eps, not by 0
    loss = _finite_with_gradients(lambda a, b: nt_xent(a, b, 0.5), zeros, zeros)
    assert loss == pytest.approx(math.log(11), abs=1e-4)
    assert math.isfinite(float(embedding_std(zeros)))


def test_batch_statistics_losses_refuse_a_batch_of_one() -> None:
    one = torch.randn(1, 8)
    with pytest.raises(ValueError, match="Barlow Twins needs at least 2 embeddings"):
        barlow_twins(one, one)
    with pytest.raises(ValueError, match="VICReg needs at least 2 embeddings"):
        vicreg_terms(one, one)


def vicreg_reference(z1: np.ndarray, z2: np.ndarray) -> tuple[float, float, float]:
    """VICReg's terms as the authors' code computes them (variance averaged over the two branches)."""
    n, d = z1.shape
    inv = float(np.mean((z1 - z2) ** 2))
    var = sum(float(np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))) for z in (z1, z2)) / 2
    cov = 0.0
    for z in (z1, z2):
        c = (z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1)
        cov += float(sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)) / d
    return inv, var, cov


@pytest.mark.parametrize("n,d", SIZES)
def test_vicreg_matches_the_reference(n: int, d: int) -> None:
    rng = np.random.default_rng(7 * n + d)
    z1, z2 = 0.5 * rng.normal(size=(n, d)), 0.5 * rng.normal(size=(n, d))
    got = [float(x) for x in vicreg_terms(_t(z1), _t(z2))]
    want = vicreg_reference(z1, z2)
    assert all(abs(g - w) < 1e-5 for g, w in zip(got, want)), (got, want)
    total = float(vicreg(_t(z1), _t(z2), 25.0, 25.0, 1.0))
    assert abs(total - (25 * want[0] + 25 * want[1] + want[2])) < 1e-4


def test_vicreg_closed_forms() -> None:
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    z = 2 * h[:, 1:]  # orthogonal columns, each of variance 16/3 > 1
    inv, var, cov = (float(x) for x in vicreg_terms(_t(z), _t(z)))
    assert inv == 0.0 and var == 0.0 and cov == pytest.approx(0.0, abs=1e-12)
    collapsed = np.ones((5, 3))  # every embedding the same: the variance hinge is 1 - sqrt(1e-4)
    assert float(vicreg_terms(_t(collapsed), _t(collapsed))[1]) == pytest.approx(1 - 0.01, abs=1e-6)


def dino_reference(
    student: list[np.ndarray], teacher: list[np.ndarray], center: np.ndarray, ts: float, tt: float
) -> float:
    """DINO's Algorithm 1 (H(t, s) over every pair of a teacher crop and a different student crop)."""

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        q = softmax((t - center) / tt)
        for j, s in enumerate(student):
            if i == j:
                continue
            total += float(np.mean(-(q * np.log(softmax(s / ts))).sum(1)))
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n,k", [(3, 4), (8, 16), (16, 64)])
@pytest.mark.parametrize("local", [0, 2])
def test_dino_matches_algorithm_1(n: int, k: int, local: int) -> None:
    rng = np.random.default_rng(n + k + local)
    student = [rng.normal(size=(n, k)) for _ in range(2 + local)]
    teacher = [rng.normal(size=(n, k)) for _ in range(2)]
    center = rng.normal(size=k) * 0.1
    got = dino([_t(s) for s in student], [_t(t) for t in teacher], _t(center), 0.1, 0.04)
    assert abs(float(got) - dino_reference(student, teacher, center, 0.1, 0.04)) < 1e-5


def test_dino_closed_form() -> None:
    # A uniform teacher (all outputs equal) against a uniform student: cross-entropy log K.
    k = 8
    flat = [torch.zeros(4, k, dtype=torch.float64) for _ in range(2)]
    assert float(dino(flat, flat, torch.zeros(k, dtype=torch.float64), 0.1, 0.04)) == pytest.approx(math.log(k))


def test_fixmatch_unlabeled_loss_and_mask() -> None:
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 9.0]])
    strong = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 1.0, 0.0]])
    loss, mask, pseudo = fixmatch_unlabeled(weak, strong, 0.95)
    assert mask.tolist() == [True, False, True] and pseudo.tolist() == [0, 0, 2]
    ce = [-math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(1 / (math.exp(1) + 2))]
    assert float(loss) == pytest.approx((ce[0] + ce[1]) / 3, abs=1e-6)  # masked images count as 0
    assert float(fixmatch_unlabeled(weak, strong, 1.01)[0]) == 0.0


def test_embedding_std_is_the_collapse_signal() -> None:
    assert float(embedding_std(torch.ones(16, 8))) == pytest.approx(0.0, abs=1e-7)
    spread = torch.randn(20000, 32)
    assert float(embedding_std(spread)) == pytest.approx(1 / math.sqrt(32), rel=0.05)


def test_contrastive_top1_signals() -> None:
    from selfsup.losses import info_nce_top1, simclr_top1

    z = torch.eye(6)[:, :6]
    assert float(simclr_top1(z[:3], z[:3] * 2)) == 1.0  # each view's twin is its nearest
    assert float(simclr_top1(z[:3], z[[1, 2, 0]])) == 0.0  # every twin is another image
    q = torch.eye(4)
    assert float(info_nce_top1(q, q, -q)) == 1.0 and float(info_nce_top1(q, -q, q)) == 0.0


def test_dino_teacher_entropy_closed_forms() -> None:
    k = 16
    center = torch.zeros(k)
    uniform = torch.zeros(5, k)  # equal logits: every target uniform, entropy log K
    assert float(dino_teacher_entropy(uniform, center, 0.04)) == pytest.approx(1.0, abs=1e-6)
    peaked = torch.zeros(5, k)
    peaked[:, 3] = 10.0  # one logit far ahead at temperature 0.04: one-hot targets
    assert float(dino_teacher_entropy(peaked, center, 0.04)) == pytest.approx(0.0, abs=1e-6)
    # Centring removes what every sample shares: the same peaked outputs, centred on themselves, are uniform.
    assert float(dino_teacher_entropy(peaked, peaked[0], 0.04)) == pytest.approx(1.0, abs=1e-6)
    # Two equal logits ahead: entropy log 2.
    two = torch.zeros(5, k)
    two[:, :2] = 10.0
    assert float(dino_teacher_entropy(two, center, 0.04)) == pytest.approx(math.log(2) / math.log(k), abs=1e-6)
