"""Losses as pure functions on tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent, SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020).

    Each of the 2N embeddings is an anchor; its positive is the other view of the same
    image and its negatives are the other 2N - 2 embeddings. With cosine similarity
    ``s(i, j)`` the loss of anchor ``i`` with positive ``p(i)`` is::

        -log( exp(s(i, p(i)) / t) / sum_{k != i} exp(s(i, k) / t) )

    and the result is the mean over all 2N anchors (the paper's Algorithm 1).

    Across processes, pass the embeddings of the whole global batch as ``z1_all`` and
    ``z2_all`` (M, D), in which this process's rows start at ``offset``: the local 2N
    anchors are then contrasted with all 2M embeddings (2M - 2 negatives each), and the
    mean of the result over processes is the single-process loss of the global batch.

    Args:
        z1: (N, D) embeddings of the first views.
        z2: (N, D) embeddings of the second views; row i pairs with row i of ``z1``.
        temperature: t > 0.
        z1_all: (M, D) first views of the global batch (default: ``z1``).
        z2_all: (M, D) second views of the global batch (default: ``z2``).
        offset: Row of ``z1`` within ``z1_all``.

    Returns:
        Scalar loss (float32 even under autocast).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    n, m = z1.shape[0], z1_all.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    candidates = F.normalize(torch.cat([z1_all, z2_all]).float(), dim=1)  # (2M, D)
    logits = anchors @ candidates.T / temperature  # (2N, 2M)
    local = torch.arange(n, device=logits.device) + offset
    own = torch.cat([local, local + m])  # each anchor's own column
    # An anchor is not its own negative: remove it from the softmax.
    logits[torch.arange(2 * n, device=logits.device), own] = float("-inf")
    targets = torch.cat([local + m, local])  # the other view of the same image
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
