"""Losses as pure functions on tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent, SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020).

    Each of the 2N embeddings is an anchor; its positive is the other view of the same
    image and its negatives are the other 2N - 2 embeddings. With cosine similarity
    ``s(i, j)`` the loss of anchor ``i`` with positive ``p(i)`` is::

        -log( exp(s(i, p(i)) / t) / sum_{k != i} exp(s(i, k) / t) )

    and the result is the mean over all 2N anchors (the paper's Algorithm 1).

    Args:
        z1: (N, D) embeddings of the first views.
        z2: (N, D) embeddings of the second views; row i pairs with row i of ``z1``.
        temperature: t > 0.

    Returns:
        Scalar loss (float32 even under autocast).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    logits = z @ z.T / temperature  # (2N, 2N)
    # An anchor is not its own negative: remove the diagonal from the softmax.
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with a queue of negatives, as in MoCo (He et al. 2020).

    Args:
        q: (N, D) query embeddings (normalised inside).
        k: (N, D) positive key embeddings, row i for query i (no gradient expected).
        queue: (K, D) negative keys, already normalised.
        temperature: t > 0.

    Returns:
        Scalar mean over the N queries of ``-log softmax([q.k+, q.queue]/t)[0]``.
    """
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    pos = (q * k).sum(1, keepdim=True)  # (N, 1)
    neg = q @ queue.float().T  # (N, K)
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Consistency cost of the Pi-model and Mean Teacher: MSE between softmax outputs.

    Args:
        student_logits: (N, C).
        teacher_logits: (N, C); the caller detaches it where the target must not move.

    Returns:
        Scalar: squared difference of the class probabilities averaged over samples and
        classes (Mean Teacher's ``softmax_mse_loss`` divided by the batch size).
    """
    return F.mse_loss(F.softmax(student_logits.float(), dim=1), F.softmax(teacher_logits.float(), dim=1))
