"""SimCLR training pipelines compared by the benchmarks, each built the way its users would.

* ``bare``: the model step alone on random tensors already in memory (the ceiling);
* ``selfsup``: uint8 data on the device, batch augmentation, the method's step, LARS:
  exactly :func:`selfsup.train.train_step`;
* ``seed_style``: what the seed reports ran: torchvision PIL transforms giving two views
  per image in a ``DataLoader`` with worker processes, feeding selfsup's model step;
* ``lightly``: lightly's own pipeline as its documentation and CIFAR-10 benchmark show
  it: ``SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)`` on a
  ``LightlyDataset`` of the JPEG files, ``DataLoader`` with workers, ``SimCLRProjectionHead``,
  ``NTXentLoss``, SGD (lr 0.06 x batch / 128, momentum 0.9, weight decay 5e-4), float32;
* ``lightly_tuned``: the same data pipeline with selfsup's model settings (bf16 autocast
  where native, channels_last), to separate the data pipeline from the model step.

All use the same backbone and the same number of images per step. lightly is an
optional extra (``pip install -e ".[bench]"``), not a dependency of selfsup.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from selfsup.methods import Method

CACHE = Path(__file__).resolve().parent / ".cache"
Step = Callable[[], torch.Tensor]


@dataclass
class Context:
    """What every pipeline shares: the resolved config, the data, the device."""

    cfg: Any
    splits: Any
    device: torch.device
    bf16: bool
    batch: int
    backbone: str
    #: torch.compile the backbone of the pipelines built from this context.
    compile: bool = False
    #: torch.compile backend ("inductor"; "eager" checks the code path quickly on a CPU).
    compile_backend: str = "inductor"
    #: DataLoader worker processes of the PIL pipelines (seed_style, lightly).
    workers: int = 2


def setup(
    backbone: str = "preact_resnet26",
    batch: int = 256,
    precision: str = "auto",
    device: str = "auto",
    threads: int = 0,
    config: str | Path | None = None,
    data: str = "cifar10",
) -> Context:
    """Load a dataset (the bundled CIFAR-10 by default) and resolve a config (quick recipe unless ``config``)."""
    from selfsup.config import load_config
    from selfsup.data import load_dataset
    from selfsup.runtime import resolve_device, use_bf16
    from selfsup.train import resolve_config

    if threads:
        torch.set_num_threads(threads)
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(
        config or repo / "configs" / "quick.yaml",
        {
            "data.name": data,
            "model.backbone": backbone,
            "train.batch_size": batch,
            "train.precision": precision,
            "train.progress": False,
        },
    )
    splits = load_dataset(cfg.data.name, progress=False)
    cfg = resolve_config(cfg, splits)
    dev = resolve_device(device)
    return Context(cfg, splits, dev, use_bf16(precision, dev), batch, backbone)


def selfsup_model(ctx: Context, seed: int = 0) -> tuple[Method, torch.optim.Optimizer]:
    """selfsup's SimCLR method and optimizer for this context."""
    from selfsup.methods import build_method
    from selfsup.optim import build_optimizer

    torch.manual_seed(seed)
    model = build_method(ctx.cfg, 10).to(ctx.device).to(memory_format=torch.channels_last).train()
    if ctx.compile:
        model.backbone.compile(backend=ctx.compile_backend)  # type: ignore[operator]
    return model, build_optimizer(model, ctx.cfg.optim, ctx.batch)


def model_step(model: nn.Module, opt: torch.optim.Optimizer, views: torch.Tensor, ctx: Context) -> torch.Tensor:
    from selfsup.methods import Batch
    from selfsup.runtime import autocast

    labels = torch.zeros(len(views) // 2, dtype=torch.long, device=ctx.device)
    with autocast(ctx.device, ctx.bf16):
        loss = model.training_step(Batch(views, labels, torch.Generator()))["loss"]  # type: ignore[operator]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def bare(ctx: Context) -> Step:
    model, opt = selfsup_model(ctx)
    views = torch.randn(2 * ctx.batch, 3, 32, 32, device=ctx.device).contiguous(memory_format=torch.channels_last)
    return lambda: model_step(model, opt, views, ctx)


def selfsup_pipeline(ctx: Context, fixed: bool | None = None) -> Step:
    """selfsup's training step on the device-resident uint8 data (``compile``: model and augmentation).

    ``fixed=True`` takes the fixed augmentation path
    (:func:`selfsup.augment.batch.apply_fixed`) also where it is not compiled.
    """
    from selfsup.methods.base import Batch
    from selfsup.runtime import to_device
    from selfsup.train import StepContext, train_step
    from selfsup.train.loop import view_augment

    model, opt = selfsup_model(ctx)
    aug = view_augment(ctx.cfg, model, compile=ctx.compile)
    for a in aug.augments:
        a.fixed = fixed
    images = torch.from_numpy(ctx.splits.train.images).to(ctx.device)
    labels = torch.from_numpy(ctx.splits.train.labels).to(ctx.device)
    step_ctx = StepContext(ctx.device, ctx.bf16)
    count = {"i": 0}

    def step() -> torch.Tensor:
        g = torch.Generator().manual_seed(count["i"])
        idx = to_device(torch.randint(0, len(images), (ctx.batch,), generator=g), ctx.device)
        count["i"] += 1
        batch = Batch(images.new_empty(0), labels.index_select(0, idx), g, images=images.index_select(0, idx))
        return train_step(model, opt, aug, batch, step_ctx)["loss"]

    return step


def cycle(loader: Any) -> Callable[[], Any]:
    """A function returning the next batch of ``loader``, starting over when it ends."""
    it = iter(loader)

    def nxt() -> Any:
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    return nxt


def calibrated_step_seconds(step: Callable[[], Any], model: nn.Module, opt: Any, warmup: int, timed: int) -> float:
    """Seconds per call of ``step`` after ``warmup`` calls; the model and optimizer are restored afterwards.

    A budgeted loop plans its schedule from this timing, so the timing steps must not
    count as training: the weights and optimizer state go back to where they started.
    """
    start = {k: v.clone() for k, v in model.state_dict().items()}
    opt_start = opt.state_dict()
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(timed):
        out = step()
        if isinstance(out, torch.Tensor):
            float(out)  # wait for the step (a loss on the device)
    seconds = (time.perf_counter() - t0) / timed
    model.load_state_dict(start)
    opt.load_state_dict(opt_start)
    return seconds


def seed_style(ctx: Context) -> Step:
    import torchvision.transforms as T
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    a = ctx.cfg.augment
    s = a.jitter_strength
    transform = T.Compose(
        [
            T.RandomResizedCrop(32, scale=tuple(a.crop_scale)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=a.jitter_p),
            T.RandomGrayscale(p=a.grayscale_p),
            T.ToTensor(),
            T.Normalize(a.mean, a.std),
        ]
    )
    images = ctx.splits.train.images

    class TwoViews(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            img = Image.fromarray(images[i])
            return transform(img), transform(img)

    loader = DataLoader(
        TwoViews(),
        batch_size=ctx.batch,
        shuffle=True,
        num_workers=ctx.workers,
        drop_last=True,
        persistent_workers=ctx.workers > 0,
        pin_memory=ctx.device.type == "cuda",
    )
    nxt = cycle(loader)
    model, opt = selfsup_model(ctx)

    def step() -> torch.Tensor:
        v1, v2 = nxt()
        views = torch.cat([v1, v2]).to(ctx.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return model_step(model, opt, views, ctx)

    return step


def jpeg_folder(data: str = "cifar10") -> Path:
    """The training images as files (lightly reads image files).

    The bundled JPEGs are extracted once; a folder given as ``data`` (with ``train/``)
    is used as it is.
    """
    if data != "cifar10" and (Path(data) / "train").is_dir():
        return Path(data) / "train"
    repo = Path(__file__).resolve().parents[1]
    dest = CACHE / "cifar10-jpeg"
    if not (dest / "train").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(repo / "data" / "cifar10-jpeg" / "train.tar.gz") as tar:
            tar.extractall(dest, filter="data")
    return dest / "train"


class LightlySimCLR(nn.Module):
    """The model of lightly's SimCLR examples: backbone + SimCLRProjectionHead."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim, 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def lightly_parts(ctx: Context, seed: int = 0) -> dict[str, Any]:
    """lightly's dataset/loader, model, loss and optimizer as its CIFAR-10 benchmark sets them."""
    from lightly.data import LightlyDataset
    from lightly.loss import NTXentLoss
    from lightly.transforms.simclr_transform import SimCLRTransform
    from torch.utils.data import DataLoader

    from selfsup.models import build_backbone

    transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
    dataset = LightlyDataset(input_dir=str(jpeg_folder(ctx.cfg.data.name)), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=ctx.batch,
        shuffle=True,
        drop_last=True,
        num_workers=ctx.workers,
        persistent_workers=ctx.workers > 0,
        pin_memory=ctx.device.type == "cuda",
    )
    torch.manual_seed(seed)
    backbone = build_backbone(ctx.backbone)
    model = LightlySimCLR(backbone, int(backbone.feature_dim)).to(ctx.device)  # type: ignore[arg-type]
    if ctx.compile:
        model.backbone.compile(backend=ctx.compile_backend)
    lr = 6e-2 * ctx.batch / 128
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    # SimCLRTransform normalises with ImageNet statistics; features must be extracted alike.
    return {
        "loader": loader,
        "model": model,
        "criterion": NTXentLoss(),
        "opt": opt,
        "lr": lr,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }


def lightly_pipeline(ctx: Context, tuned: bool = False) -> Step:
    from selfsup.runtime import autocast

    p = lightly_parts(ctx)
    model, criterion, opt = p["model"], p["criterion"], p["opt"]
    if tuned:
        model.to(memory_format=torch.channels_last)
    nxt = cycle(p["loader"])

    def step() -> torch.Tensor:
        (x0, x1), _, _ = nxt()
        x0, x1 = x0.to(ctx.device, non_blocking=True), x1.to(ctx.device, non_blocking=True)
        if tuned:
            x0 = x0.contiguous(memory_format=torch.channels_last)
            x1 = x1.contiguous(memory_format=torch.channels_last)
        with autocast(ctx.device, ctx.bf16 and tuned):
            z0, z1 = model(x0), model(x1)
            loss = criterion(z0.float(), z1.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


PIPELINES: dict[str, Callable[[Context], Step]] = {
    "bare": bare,
    "selfsup": selfsup_pipeline,
    "selfsup_fixed": lambda ctx: selfsup_pipeline(ctx, fixed=True),
    "seed_style": seed_style,
    "lightly": lambda ctx: lightly_pipeline(ctx, tuned=False),
    "lightly_tuned": lambda ctx: lightly_pipeline(ctx, tuned=True),
}
