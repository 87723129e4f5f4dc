"""Every registered method: steps, gradients, resume; MoCo's queue and shuffle-BN; EMA; semi-supervision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO, epoch_records, tiny_overrides
from selfsup import pretrain
from selfsup.checkpoint import load_latest
from selfsup.config import load_config
from selfsup.ema import ema_update, frozen_copy, warmup_decay
from selfsup.errors import CheckpointError, ConfigError
from selfsup.eval import evaluate_classifiers
from selfsup.eval.finetune import finetune
from selfsup.methods import METHODS, Batch, MeanTeacher, Method, MoCo, build_method
from selfsup.methods.common import load_backbone_weights
from selfsup.methods.pi_model import sigmoid_rampup
from selfsup.models import ProjectionHead, build_backbone
from selfsup.models.norm import SplitBatchNorm, convert_split_bn
from selfsup.rundir import read_jsonl
from selfsup.train.sampler import StepSampler

#: What a semi-supervised method needs on the tiny dataset (96 training images).
SEMI = {"semi.labels": 24, "semi.labeled_batch_size": 8, "semi.rampup_epochs": 1.0}


def method_cfg(name: str, data: Path, **extra: Any) -> Any:
    """A second-long CPU run of any registered method on the tiny dataset."""
    needs = SEMI if METHODS[name].semi_supervised else {}
    return load_config(None, tiny_overrides(data, **{"method.name": name, **needs, **extra}))


def fake_batch(model: Method, n: int = 16, seed: int = 0, step: int = 3, epoch: float = 0.5) -> Batch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    if model.semi_supervised:
        labels[n // 2 :] = -1
    views = torch.randn(model.n_views * n, 3, 32, 32, generator=g)
    return Batch(views, labels, g, step=step, progress=0.1, epoch=epoch)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_steps_finite_loss_and_gradients_where_they_belong(name: str, shared_folder: Path) -> None:
    torch.manual_seed(0)
    model = build_method(method_cfg(name, shared_folder), 3)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for step in range(2):
        out = model.training_step(fake_batch(model, seed=step))
        assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
        opt.zero_grad()
        out["loss"].backward()
        for n, p in model.named_parameters():
            if n in frozen:
                assert p.grad is None, f"{n} got a gradient"
            else:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{n} got no gradient"
        opt.step()
        model.after_optimizer_step(fake_batch(model, seed=step))
        assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())  # only scalars, all logged
    assert isinstance(model.backbone, nn.Module) and not any(n.startswith("backbone.") for n in frozen)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_projection_head_of_the_self_supervised_methods(name: str, shared_folder: Path) -> None:
    """What `selfsup eval --after-head` evaluates: the head that feeds the loss, trained with the encoder."""
    model = build_method(method_cfg(name, shared_folder), 3)
    head = model.projection_head()
    if model.uses_labels:  # the few-label methods classify; they have no projection head
        assert head is None
        return
    assert head is not None and any(p.requires_grad for p in head.parameters())  # DINO fixes one norm
    model.eval()  # as evaluation runs it (MoCo's split BatchNorm needs whole sub-batches in training)
    out = head(model.backbone(torch.randn(4, 3, 32, 32)))
    assert out.shape[0] == 4 and out.ndim == 2


@pytest.mark.parametrize("name", sorted(METHODS))
def test_checkpoint_and_resume(name: str, shared_folder: Path, tmp_path: Path) -> None:
    cfg = method_cfg(name, shared_folder, **{"train.epochs": 2, "train.keep_checkpoints": 3})
    full = tmp_path / "full"
    pretrain(cfg, out=full, log=lambda s: None)
    part = tmp_path / "part"
    pretrain(cfg, out=part, log=lambda s: None)
    # Lose the last epoch as a kill would: drop the newest checkpoint, resume from epoch 1.
    ckpts = sorted((part / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step-000000006.pt", "step-000000012.pt"]
    ckpts[-1].unlink()
    pretrain(cfg, out=part, resume=True, log=lambda s: None)
    a, b = load_latest(full)[0], load_latest(part)[0]
    assert a["step"] == b["step"] == 12
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


# ---- EMA and split BatchNorm ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_bn_per_view_keeps_each_view_in_its_own_batchnorm_batch(name: str, shared_folder: Path) -> None:
    """With method.bn_per_view the first view's projections do not depend on the second view's images."""

    def first_view_projection(apart: bool, second_view_seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_method(method_cfg(name, shared_folder, **{"method.bn_per_view": apart}), 3)
        seen: list[torch.Tensor] = []
        model.projector.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        batch = fake_batch(model)
        n = batch.views.shape[0] // 2
        batch.views[n:] = torch.randn(batch.views[n:].shape, generator=torch.Generator().manual_seed(second_view_seed))
        out = model.training_step(batch)
        assert torch.isfinite(out["loss"])
        return seen[0][:n]

    assert torch.allclose(first_view_projection(True, 1), first_view_projection(True, 2))
    assert not torch.allclose(first_view_projection(False, 1), first_view_projection(False, 2))


def test_ema_update_arithmetic() -> None:
    src = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    tgt = frozen_copy(src)
    assert all(not p.requires_grad for p in tgt.parameters())
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
        src[1].running_mean.fill_(2.0)
        src[1].num_batches_tracked.fill_(7)
    before = [t.clone() for t in tgt.state_dict().values()]
    ema_update(tgt, src, 0.9)
    for (key, new), old in zip(tgt.state_dict().items(), before, strict=True):
        s = src.state_dict()[key]
        if new.dtype.is_floating_point:
            torch.testing.assert_close(new, 0.9 * old + 0.1 * s)
        else:
            assert torch.equal(new, s)
    ema_update(tgt, src, 0.0)
    for key, value in tgt.state_dict().items():
        assert torch.equal(value, src.state_dict()[key])


def test_warmup_decay_short_early_and_the_long_decay_later() -> None:
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)  # the first average is mostly the new weights
    assert warmup_decay(0.999, 90) == pytest.approx(0.91)
    assert warmup_decay(0.999, 20_000) == 0.999
    decays = [warmup_decay(0.999, s) for s in range(0, 12_000, 500)]
    assert decays == sorted(decays)
    # After 333 steps of a constant 0.999 the initial weights keep 72 % of the average;
    # with the cap they keep under 0.1 %.
    weight = 1.0
    for s in range(333):
        weight *= warmup_decay(0.999, s)
    assert weight < 1e-3 < 0.999**333


def test_split_batchnorm_normalises_each_sub_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 4, 5, 5) * 3 + 1
    bn = SplitBatchNorm(4, splits=3)
    out = bn(x)
    for k in range(3):
        group = x[k::3]
        ref = (group - group.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            group.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5
        )
        torch.testing.assert_close(out[k::3], ref, atol=1e-5, rtol=1e-5)
    # Running statistics: the mean of the sub-batches' updates.
    expected = 0.1 * torch.stack([x[k::3].mean((0, 2, 3)) for k in range(3)]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected, atol=1e-6, rtol=1e-5)
    bn.eval()
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(x), plain.eval()(x))
    net = convert_split_bn(build_backbone("preact_resnet8"), 2)
    assert all(not isinstance(m, nn.BatchNorm2d) or isinstance(m, SplitBatchNorm) for m in net.modules())
    with pytest.raises(ValueError, match="does not split"):
        SplitBatchNorm(4, 5)(x)


# ---- MoCo ------------------------------------------------------------------------------------


def test_moco_queue_is_fifo_and_wraps(shared_folder: Path) -> None:
    model = build_method(method_cfg("moco", shared_folder, **{"method.queue_size": 10}), 3)
    assert isinstance(model, MoCo)
    keys = [torch.full((4, model.queue.shape[1]), float(i)) for i in range(1, 4)]
    for k in keys:
        model._enqueue(k)
    q = model.queue[:, 0]
    # 12 keys into 10 slots: batches fill 0-3, 4-7, then 8, 9 and (wrapping) 0, 1.
    assert q.tolist() == [3, 3, 1, 1, 2, 2, 2, 2, 3, 3]
    assert int(model.queue_ptr) == 2


def test_moco_key_encoder_is_momentum_average_and_unshuffled(shared_folder: Path) -> None:
    torch.manual_seed(0)
    model = build_method(method_cfg("moco", shared_folder, **{"method.bn_splits": 1, "method.momentum": 0.9}), 3)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.5)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(("key_backbone.", "key_head."))}
    before = [p.clone() for p in model.key_backbone.parameters()]
    model.after_optimizer_step(fake_batch(model))
    for old, key_p, q_p in zip(before, model.key_backbone.parameters(), model.backbone.parameters(), strict=True):
        torch.testing.assert_close(key_p, 0.9 * old + 0.1 * q_p)
    x = torch.randn(8, 3, 32, 32)
    keys = model._keys(x, torch.Generator().manual_seed(1))
    # With one BN group the shuffle cannot change a key: keys come back in input order.
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.key_head(model.key_backbone(x)), dim=1)
    torch.testing.assert_close(keys, direct, atol=1e-5, rtol=1e-4)


def test_moco_batch_must_split_into_bn_groups(shared_folder: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of method.bn_splits"):
        build_method(method_cfg("moco", shared_folder, **{"method.bn_splits": 3}), 3)


# ---- semi-supervised ------------------------------------------------------------------------


def test_sigmoid_rampup() -> None:
    assert sigmoid_rampup(0, 5) == pytest.approx(np.exp(-5))
    assert sigmoid_rampup(2.5, 5) == pytest.approx(np.exp(-5 * 0.25))
    assert sigmoid_rampup(5, 5) == 1.0 and sigmoid_rampup(9, 5) == 1.0 and sigmoid_rampup(0, 0) == 1.0


def test_mean_teacher_decay_schedule(shared_folder: Path) -> None:
    torch.manual_seed(0)
    model = build_method(method_cfg("mean-teacher", shared_folder), 3)
    assert isinstance(model, MeanTeacher)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    # Step 0: decay min(0.99, 1 - 1/1) = 0, the teacher becomes the student.
    assert all(n.startswith("teacher_") for n, p in model.named_parameters() if not p.requires_grad)
    model.after_optimizer_step(fake_batch(model, step=0, epoch=0.0))
    for t, s in zip(model.teacher_backbone.parameters(), model.backbone.parameters(), strict=True):
        assert torch.equal(t, s)
    old = [p.clone() for p in model.teacher_backbone.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model.after_optimizer_step(fake_batch(model, step=5000, epoch=3.0))  # after the ramp-up: 0.999
    for t, o, s in zip(model.teacher_backbone.parameters(), old, model.backbone.parameters(), strict=True):
        torch.testing.assert_close(t, 0.999 * o + 0.001 * s)


def test_step_sampler_streams() -> None:
    labeled = np.array([3, 7, 11, 20, 21])
    s = StepSampler(40, 8, seed=0, labeled=labeled, labeled_batch_size=3)
    assert s.steps_per_epoch == 5
    seen_l, seen_u = [], []
    for step in range(10):
        idx, n_lab = s(step)
        assert n_lab == 3 and len(idx) == 11
        seen_l += idx[:3].tolist()
        seen_u += idx[3:].tolist()
    # The labelled stream cycles through the subset, each cycle a permutation of it.
    assert set(seen_l) == set(labeled.tolist())
    assert sorted(seen_l[:5]) == sorted(labeled.tolist()) and sorted(seen_l[5:10]) == sorted(labeled.tolist())
    # The main stream visits every image once per epoch.
    assert sorted(seen_u[:40]) == list(range(40))
    again = StepSampler(40, 8, seed=0, labeled=labeled, labeled_batch_size=3)
    assert torch.equal(again(7)[0], s(7)[0])
    only = StepSampler(40, 8, seed=0, labeled=labeled, labeled_batch_size=3, use_main=False)
    assert len(only(0)[0]) == 3 and only.steps_per_epoch == 5
    plain, n = StepSampler(40, 8, seed=0)(0)
    assert n == 8 == len(plain)


def test_semi_run_hides_unlabelled_labels(shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    original = MeanTeacher.training_step

    def spy(self: MeanTeacher, batch: Batch) -> dict:
        seen.append(batch.labels.clone())
        return original(self, batch)

    monkeypatch.setattr(MeanTeacher, "training_step", spy)
    cfg = method_cfg("mean-teacher", shared_folder, **{"train.eval_after": True})
    result = pretrain(cfg, out=tmp_path / "mt", log=lambda s: None)
    assert all(len(b) == 8 + 16 and (b[:8] >= 0).all() and (b[8:] == -1).all() for b in seen)
    m = json.loads((tmp_path / "mt" / "metrics.json").read_text())
    assert 0 <= m["test_top1"] <= 1 and 0 <= m["student_test_top1"] <= 1 and m["labels"] == 24
    assert "linear_top1" not in m  # a probe would use every label
    assert result.metrics["test_top1"] == m["test_top1"]
    again = evaluate_classifiers(tmp_path / "mt", log=lambda s: None)
    assert again["test_top1"] == pytest.approx(m["test_top1"])


def test_supervised_on_labels_alone_uses_only_them(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selfsup.methods import Supervised

    seen: list[torch.Tensor] = []
    original = Supervised.training_step
    monkeypatch.setattr(Supervised, "training_step", lambda self, b: (seen.append(b.labels), original(self, b))[1])
    cfg = method_cfg("supervised", shared_folder, **{"semi.labels": 24, "semi.labeled_batch_size": 8})
    pretrain(cfg, out=tmp_path / "sup", log=lambda s: None)
    assert len(seen) == 12 and all(len(b) == 8 and (b >= 0).all() for b in seen)


@pytest.mark.parametrize("loss", ["nt-logistic", "margin-triplet"])
def test_simclr_with_the_losses_it_compares_with(loss: str, shared_folder: Path) -> None:
    from selfsup.losses import margin_triplet, nt_logistic

    torch.manual_seed(0)
    cfg = method_cfg("simclr", shared_folder, **{"method.loss": loss, "method.semi_hard": True})
    model = build_method(cfg, 3)
    batch = fake_batch(model)
    out = model.training_step(batch)
    z1, z2 = model.head(model.backbone(batch.views)).chunk(2)
    expected = nt_logistic(z1, z2, 0.2, True) if loss == "nt-logistic" else margin_triplet(z1, z2, 0.5, True)
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.backbone.parameters())


def test_milestones_of_a_few_label_run_give_its_classifiers_accuracy(shared_folder: Path, tmp_path: Path) -> None:
    from selfsup.eval import evaluate_milestones

    extra = {"train.epochs": 2, "train.checkpoint_every": 1, "eval.linear_epochs": 1, "eval.knn_k": 5}
    pretrain(method_cfg("fixmatch", shared_folder, **extra), out=tmp_path / "fm", log=lambda s: None)
    rows = evaluate_milestones(tmp_path / "fm", log=lambda s: None)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:  # the EMA and the raw weights, each on the test split
        assert 0 <= r["test_top1"] <= 1 and 0 <= r["student_test_top1"] <= 1


def test_semi_method_without_labels_is_refused(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **{"method.name": "pi"}))
    with pytest.raises(ConfigError, match="selfsup semi --method pi --labels N"):
        pretrain(cfg, out=tmp_path / "x", log=lambda s: None)
    cfg = load_config(None, tiny_overrides(shared_folder, **{"semi.labels": 24}))
    with pytest.raises(ConfigError, match="does not use labels"):
        pretrain(cfg, out=tmp_path / "x", log=lambda s: None)
    assert not (tmp_path / "x").exists()


# ---- initialisation from another run, fine-tuning --------------------------------------------


@pytest.fixture(scope="module")
def simclr_run(shared_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "simclr"
    pretrain(method_cfg("simclr", shared_folder), out=out, log=lambda s: None)
    return out


def test_init_from_a_run(simclr_run: Path, shared_folder: Path, tmp_path: Path) -> None:
    cfg = method_cfg("mean-teacher", shared_folder, **{"model.init": str(simclr_run)})
    model = build_method(cfg, 3)
    trained = load_latest(simclr_run)[0]["model"]
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, trained[f"backbone.{key}"])
    for key, value in model.teacher_backbone.state_dict().items():  # the teacher starts from it too
        assert torch.equal(value, trained[f"backbone.{key}"])
    with pytest.raises(CheckpointError, match="not a PreActResNetCifar of this shape"):
        load_backbone_weights(build_backbone("preact_resnet20"), simclr_run)
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone_weights(build_backbone("preact_resnet8"), tmp_path / "none")
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        (tmp_path / "empty").mkdir()
        load_backbone_weights(build_backbone("preact_resnet8"), tmp_path / "empty")


def test_finetune(simclr_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import selfsup.eval.finetune as ft_module
    from selfsup.methods.supervised import Supervised

    built: list[nn.Module] = []

    class Recorded(Supervised):  # keeps every fine-tuned model for the checks below
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(ft_module, "Supervised", Recorded)
    lines: list[str] = []
    r = finetune(
        simclr_run,
        {"finetune.labels": 15, "finetune.val_size": 9, "finetune.epochs": 3, "finetune.batch_size": 8},
        log=lines.append,
    )["15"]
    assert 0 <= r["test_top1"] <= 1 and 1 <= r["best_epoch"] <= 3 and r["n_test"] == 24 and r["val_size"] == 9
    records = epoch_records(simclr_run / "finetune" / "labels-15")
    assert len(records) == 3 and min(x["val_loss"] for x in records) == pytest.approx(r["val_loss"])
    scratch = finetune(
        simclr_run,
        {"finetune.labels": 15, "finetune.val_size": 9, "finetune.epochs": 3, "finetune.batch_size": 8},
        random_init=True,
        log=lines.append,
    )["15"]
    m = json.loads((simclr_run / "metrics.json").read_text())
    assert m["finetune"]["15"]["test_top1"] == r["test_top1"]
    assert m["finetune_random_init"]["15"]["test_top1"] == scratch["test_top1"]
    assert "encoder" not in scratch and scratch["settings"]["val_size"] == 9
    assert "fine-tuned (pretrained encoder, 15 labels)" in lines[0]
    both = finetune(
        simclr_run,
        {
            "finetune.labels": "6,12",
            "finetune.val_size": 9,
            "finetune.epochs": 2,
            "finetune.freeze_encoder": True,
            "finetune.batch_size": 8,
        },
        log=lines.append,
    )
    assert set(both) == {"6", "12"} and both["6"]["freeze_encoder"] and both["12"]["labels"] == 12
    m = json.loads((simclr_run / "metrics.json").read_text())
    assert set(m["finetune"]) == {"6", "12", "15"}
    # The frozen encoders really stayed frozen: weights and BatchNorm statistics are the
    # pretrained ones after fine-tuning, while the unfrozen fine-tuning changed them.
    trained = {
        k.removeprefix("backbone."): v
        for k, v in load_latest(simclr_run)[0]["model"].items()
        if k.startswith("backbone.")
    }
    assert len(built) == 4
    for model, frozen in zip(built, [False, False, True, True]):
        state = model.backbone.state_dict()
        same = all(torch.equal(state[k].cpu(), trained[k]) for k in trained)
        assert same == frozen
        assert not torch.equal(model.classifier.weight, torch.zeros_like(model.classifier.weight))


def test_finetune_into_another_directory_only_reads_the_encoder(simclr_run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from selfsup.errors import RunDirError

    before = (simclr_run / "metrics.json").read_bytes()
    # Another process holds the encoder's lock (as a second fine-tuning cell of the same
    # encoder would): fine-tuning into a directory of its own does not need it.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(simclr_run / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        small = {"finetune.labels": 7, "finetune.val_size": 9, "finetune.epochs": 2, "finetune.batch_size": 8}
        r = finetune(simclr_run, small, log=lambda s: None, out=tmp_path / "cell")["7"]
        assert (simclr_run / "metrics.json").read_bytes() == before
        assert not (simclr_run / "finetune" / "labels-7").exists()
        # Into the run itself too: the fine-tuning is a run of its own there, with its own lock.
        inside = finetune(simclr_run, small, log=lambda s: None)["7"]
    finally:
        holder.kill()
        holder.wait()
    assert inside["test_top1"] == r["test_top1"]
    assert json.loads((simclr_run / "metrics.json").read_text())["finetune"]["7"]["test_top1"] == r["test_top1"]
    assert len(epoch_records(tmp_path / "cell" / "finetune" / "labels-7")) == 2
    m = json.loads((tmp_path / "cell" / "metrics.json").read_text())
    assert m["finetune"]["7"]["test_top1"] == r["test_top1"]
    # The settings and the encoder go with the result (a folder of its own has no config.yaml).
    assert r["settings"]["epochs"] == 2 and r["settings"]["batch_size"] == 8 and "labels" not in r["settings"]
    assert r["encoder"] == str(simclr_run)
    assert json.loads((tmp_path / "cell" / "machine.json").read_text())["entries"][0]["labels"] == 7
    with pytest.raises(RunDirError):
        finetune(tmp_path / "not-a-run", small, log=lambda s: None, out=tmp_path / "cell2")
    assert not (tmp_path / "cell2").exists()


def test_finetune_trains_the_head_first_then_every_layer(
    simclr_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import selfsup.eval.finetune as ft_module
    from selfsup.methods.supervised import Supervised

    built: list[nn.Module] = []
    snapshots: list[dict[str, torch.Tensor]] = []

    class Recorded(Supervised):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    def record(self: Any, model: nn.Module, epoch: float) -> dict[str, float]:  # called once per epoch
        snapshots.append({k: v.clone() for k, v in built[-1].backbone.state_dict().items()})
        return real(self, model, epoch)

    real = ft_module.Validation.__call__
    monkeypatch.setattr(ft_module, "Supervised", Recorded)
    monkeypatch.setattr(ft_module.Validation, "__call__", record)
    overrides = {
        "finetune.labels": 15,
        "finetune.val_size": 9,
        "finetune.epochs": 3,
        "finetune.batch_size": 8,
        "finetune.head_epochs": 2,
        "finetune.encoder_lr": 0.1,
    }
    finetune(simclr_run, overrides, log=lambda s: None, out=tmp_path / "ft")
    pretrained = {
        k.removeprefix("backbone."): v
        for k, v in load_latest(simclr_run)[0]["model"].items()
        if k.startswith("backbone.")
    }
    unchanged = [all(torch.equal(snap[k].cpu(), pretrained[k]) for k in pretrained) for snap in snapshots]
    assert unchanged == [True, True, False]  # LP-FT: two epochs of the head alone, then all layers


def test_finetune_whose_validation_loss_is_always_nan_stops_with_one_line(
    simclr_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from selfsup.cli import main

    code = main(
        [
            "finetune",
            str(simclr_run),
            "--out",
            str(tmp_path / "ft"),
            "--finetune.labels",
            "15",
            "--finetune.val_size",
            "9",
            "--finetune.epochs",
            "2",
            "--finetune.batch_size",
            "8",
            "--finetune.lr",
            "1e30",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "loss became nan by step" in err[0] and "(finetune.lr=1e+30) is likely too high" in err[0]


def test_sgd_is_plain_momentum_unless_nesterov_is_asked() -> None:
    from selfsup.optim import build_optimizer

    model = nn.Linear(3, 2)
    plain = build_optimizer(model, load_config(None, {"optim.name": "sgd"}).optim, 256)
    nesterov = build_optimizer(model, load_config(None, {"optim.name": "sgd", "optim.nesterov": True}).optim, 256)
    assert not plain.defaults["nesterov"] and nesterov.defaults["nesterov"]
    assert load_config(REPO / "configs" / "mean_teacher_4000.yaml").optim.nesterov
    assert not load_config(REPO / "configs" / "moco_v2.yaml").optim.nesterov


# ---- the method protocol: a new method in one place -------------------------------------------


class _Centroid(Method):
    """A throwaway method: pull both views' embeddings together, push the batch mean away from 0.

    Defined here and registered from the test alone: nothing else in selfsup is edited.
    """

    n_views = 2
    view_augment = ({"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.0, "solarize_p": 1.0})

    #: ``batch.progress`` of every ``after_optimizer_step`` (of the last instance built).
    seen_progress: list[float] = []

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        _Centroid.seen_progress = []

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int) -> _Centroid:
        from selfsup.methods.common import build_encoder

        return cls(build_encoder(cfg))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        z1, z2 = self.backbone(batch.view(0)), self.backbone(batch.view(1))
        pull = (z1 - z2).pow(2).mean()
        spread = -torch.cat([z1, z2]).std(0).mean()
        return {"loss": pull + spread, "pull": pull.detach(), "spread": spread.detach()}

    def after_optimizer_step(self, batch: Batch) -> None:
        _Centroid.seen_progress.append(batch.progress)


def test_a_method_defined_in_a_test_trains_and_evaluates(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selfsup.eval import evaluate_run
    from selfsup.methods import register_method

    monkeypatch.setitem(METHODS, "centroid", _Centroid)  # removed again after the test
    register_method("centroid", _Centroid)
    out = tmp_path / "run"
    result = pretrain(method_cfg("centroid", shared_folder, **{"train.eval_after": True}), out=out, log=lambda s: None)
    assert 0 <= result.metrics["knn_top1"] <= 1 and 0 <= result.metrics["linear_top1"] <= 1
    records = read_jsonl(out / "metrics.jsonl")
    # Every scalar the method returns is logged, per interval and per epoch.
    assert all({"loss", "pull", "spread"} <= set(r) for r in records if "lr" in r)
    assert all({"epoch_loss", "epoch_pull", "epoch_spread"} <= set(r) for r in records if "epoch_loss" in r)
    # after_optimizer_step saw every step's progress through the run, in [0, 1).
    assert _Centroid.seen_progress == [s / 12 for s in range(12)]
    assert evaluate_run(out, {"eval.linear_epochs": 1}, log=lambda s: None)["checkpoint_step"] == 12


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items() if not c.uses_labels))
def test_projection_heads_follow_the_model_section(name: str, shared_folder: Path) -> None:
    """Every self-supervised method builds its head from model.head_dims and model.head_bn."""
    for bn in (True, False):
        model = build_method(method_cfg(name, shared_folder, **{"model.head_bn": bn, "model.head_dims": [24, 12]}), 3)
        heads = [m for m in model.modules() if isinstance(m, ProjectionHead) and m.sizes[1:] == [24, 12]]
        has_bn = [any("BatchNorm" in type(x).__name__ for x in h) for h in heads]  # MoCo's is split BN
        assert heads and all(b == bn for b in has_bn), name


def test_dino_head_norm_last_layer() -> None:
    from selfsup.methods.dino import DINOHead

    torch.manual_seed(0)
    fixed, free = DINOHead([8, 16, 4], 32, norm_last=True), DINOHead([8, 16, 4], 32, norm_last=False)
    x = torch.randn(6, 8)
    assert fixed(x).abs().max() <= 1 + 1e-6  # unit-norm rows on unit-norm bottlenecks: cosines
    for head, trainable in ((fixed, False), (free, True)):
        magnitude = head.last.parametrizations.weight.original0
        assert magnitude.requires_grad is trainable
        before = magnitude.detach().clone()
        opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
        head(x).pow(2).sum().backward()
        opt.step()
        assert torch.equal(magnitude.detach(), before) is not trainable
