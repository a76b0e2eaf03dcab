"""Data-parallel training under torchrun: the same run at any world size.

Every rank visits its part of each global batch (train/batches.py), the recipe's batch size is
the global batch, and gradients are averaged by DistributedDataParallel. Three details make a
run on W ranks the run one process would train, up to float rounding:

- `batch_loss`: DDP averages gradients over ranks, so each rank's loss is its share of the global
  batch's mean (its sum times W / global batch), also when W does not divide a batch evenly;
- `--sync-bn`: BatchNorm normalises with the global batch's statistics (torch's SyncBatchNorm on
  GPUs; `GlobalBatchNorm` here, for the gloo backend, which SyncBatchNorm refuses);
- per-example measurements (dynamics) are merged across ranks before rank 0 writes them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from datadiet_cli.distributed import Ranks, all_sum_
from datadiet_cli.errors import OptionError
from datadiet_cli.train.recipes import steps_per_epoch


def check_world(batch_size: int, rows: int, ranks: Ranks) -> None:
    """The global batch must split evenly over the ranks, and every rank needs rows to train on."""
    if not ranks.distributed:
        return
    if batch_size % ranks.world:
        raise OptionError(
            f"--batch-size {batch_size}: the global batch must split evenly over {ranks.world} ranks; "
            f"use a multiple of {ranks.world}"
        )
    if rows < ranks.world:
        raise OptionError(f"{rows} example(s) cannot be shared by {ranks.world} ranks; start fewer processes")
    batches = steps_per_epoch(rows, batch_size)
    if rows // batches < ranks.world:  # split_batches' smallest batch: a rank would get no examples of it
        raise OptionError(
            f"--batch-size {batch_size}: {rows} examples make batches of {rows // batches}, fewer than the "
            f"{ranks.world} ranks; use a larger --batch-size or fewer processes"
        )


def synchronise_buffers(model: nn.Module, ranks: Ranks, sync_bn: bool) -> None:
    """Without --sync-bn each rank's BatchNorm running statistics drift with its own part of the
    last step; at an epoch's end every rank takes rank 0's, the ones the checkpoint holds, so the
    eval pass and the divergence check see the saved model on every rank."""
    if ranks.distributed and not sync_bn:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def batch_loss(losses: torch.Tensor, global_count: int, ranks: Ranks) -> torch.Tensor:
    """(B,) per-example losses of this rank's part -> the loss whose gradient, averaged by DDP over
    the ranks, is the gradient of the global batch's mean loss."""
    if not ranks.distributed:
        return losses.mean()  # the one-process run, bit for bit as before
    return losses.sum() * (ranks.world / global_count)


def synced_batchnorm(model: nn.Module, ranks: Ranks, device: torch.device, sync_bn: bool) -> nn.Module:
    """With --sync-bn under torchrun, `model` with its BatchNorm layers normalising over the global
    batch. The layers are new modules: call this before the optimizer is given the parameters."""
    if not (sync_bn and ranks.distributed):
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else global_batchnorm(model)


def data_parallel(model: nn.Module, ranks: Ranks, device: torch.device, sync_bn: bool) -> nn.Module:
    """The model to train: `model` itself in one process, else wrapped in DistributedDataParallel."""
    if not ranks.distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # Synced statistics are equal on every rank already; unsynced ones are taken from rank 0 each step.
        forward_sync_buffers=not sync_bn,
    )


def unwrapped(model: nn.Module) -> nn.Module:
    """The network inside DDP: what checkpoints hold (the same keys at any world size) and evaluation runs."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def global_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm2d of `model` replaced in place by a GlobalBatchNorm holding the same tensors."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm):
            synced = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)  # fmt: skip
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(model, name, synced.to(next(child.buffers()).device))
        else:
            global_batchnorm(child)
    return model


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, summed over the ranks.

    Forward and backward are written out (`GlobalBatchNormFunction`), as torch's SyncBatchNorm is
    on GPUs: one all-reduce of (count, sum, sum of squares) per channel forward, one of the two
    gradient sums backward, and a few fused passes over the activations (autograd over the same
    formula took twice as many and made 2 ranks slower than 1). Running statistics follow
    BatchNorm's rule (unbiased variance). Same state-dict keys as BatchNorm2d, so a checkpoint
    resumes in one process without it.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(images)
        floats = images if images.dtype == torch.float32 else images.float()  # (B, C, H, W); stats in fp32
        weight = self.weight if self.affine else torch.ones(floats.shape[1], device=floats.device)
        bias = self.bias if self.affine else torch.zeros(floats.shape[1], device=floats.device)
        out, mean, variance, total = GlobalBatchNormFunction.apply(floats, weight, bias, self.eps)
        if self.track_running_stats:
            self.update_running_stats(mean, variance, float(total))
        return out.to(images.dtype)

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, variance: torch.Tensor, count: float) -> None:
        assert self.num_batches_tracked is not None and self.running_mean is not None
        assert self.running_var is not None
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = variance * (count / max(count - 1.0, 1.0))
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def per_channel(values: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, 1), to broadcast over (B, C, H, W)."""
    return values[None, :, None, None]


class GlobalBatchNormFunction(torch.autograd.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with the global batch's mean and (biased) var.

    Backward, with N values per channel over all ranks and g the gradient of this rank's output:
    dL/dx = a g + b x + c, a = weight / std, b = -a / std^2 * sum(g (x - mean)) / N,
    c = -a sum(g) / N - b mean, the sums all-reduced (each rank's loss moves every rank's statistics).
    The weight and bias gradients are this rank's own; DDP averages them as any other parameter's.
    """

    @staticmethod
    def forward(ctx: Any, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> Any:
        channels = images.shape[1]
        count = images.new_full((1,), float(images.numel() // channels))
        # Plain sums, not var_mean: on the CPU they are ~8x faster over channels-last activations.
        sums = torch.cat([count, images.sum(dim=(0, 2, 3)), (images * images).sum(dim=(0, 2, 3))])
        dist.all_reduce(sums)  # (1 + 2C,): the global batch's count, sum and sum of squares per channel
        total, mean = sums[0], sums[1 : 1 + channels] / sums[0]
        variance = (sums[1 + channels :] / total - mean * mean).clamp(min=0.0)
        inverse_std = torch.rsqrt(variance + eps)
        scale = inverse_std * weight
        out = torch.addcmul(per_channel(bias - mean * scale), images, per_channel(scale))
        ctx.save_for_backward(images, weight, mean, inverse_std)
        ctx.total = total
        ctx.mark_non_differentiable(mean, variance, total)
        return out, mean, variance, total

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor, *unused: Any) -> Any:
        images, weight, mean, inverse_std = ctx.saved_tensors
        channels = images.shape[1]
        sums = torch.cat([gradient.sum(dim=(0, 2, 3)), (gradient * images).sum(dim=(0, 2, 3))])  # sum g, sum g x
        grad_bias = sums[:channels].clone()
        grad_weight = (sums[channels:] - mean * sums[:channels]) * inverse_std  # this rank's sum of g * x_hat
        dist.all_reduce(sums)
        sum_g, sum_g_centred = sums[:channels], sums[channels:] - mean * sums[:channels]
        a = weight * inverse_std
        b = -a * inverse_std * inverse_std * sum_g_centred / ctx.total
        c = -a * sum_g / ctx.total - b * mean
        grad_images = torch.addcmul(torch.addcmul(per_channel(c), gradient, per_channel(a)), images, per_channel(b))
        return grad_images, grad_weight, grad_bias, None


def merged_measurements(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """(M, N) per-example measurements, NaN where this rank did not measure an example -> every
    rank's measurements in one (M, N) tensor (each example is measured by at most one rank)."""
    if not ranks.distributed:
        return values
    measured = (~torch.isnan(values[0])).to(values.dtype)  # (N,)
    summed = all_sum_(ranks, torch.nan_to_num(values, nan=0.0))
    seen = all_sum_(ranks, measured)
    return torch.where(seen[None, :] > 0, summed, torch.full_like(summed, float("nan")))
