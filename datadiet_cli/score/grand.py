"""GraNd (Paul et al. 2021): the norm of each example's loss gradient w.r.t. the model's parameters.

Two ways, same meaning:
- exact: torch.func computes every example's full gradient in one vectorised pass
  (vmap over grad of a functional call), never a Python loop over examples. Memory grows
  with batch x parameters, so batches are small (64 by default).
- last-layer: only the final linear layer, whose per-example gradient has a closed form:
  d loss / d W = (p - y) h^T and d loss / d b = p - y, so the norm is ||p - y|| * sqrt(||h||^2 + 1).
  It costs one forward pass; Paul et al. report that it ranks examples much like the full norm.
BatchNorm uses its running statistics (eval mode), so an example's gradient does not depend
on the other examples of its batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from datadiet_cli.io.manifest import Manifest


def exact_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """images (B, C, H, W), labels (B,) -> (B,) ||grad of cross-entropy w.r.t. all parameters||_2."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def example_loss(params: dict[str, torch.Tensor], image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (params, buffers), (image[None],))  # (1, C)
        return F.cross_entropy(logits, label[None])

    grads = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, images, labels)  # name -> (B, *shape)
    squared = sum(g.pow(2).flatten(1).sum(dim=1) for g in grads.values())  # (B,)
    return squared.sqrt()


def last_layer_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) norm of the gradient w.r.t. the final nn.Linear (weight and bias) only."""
    final = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = final.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        logits = model(images)  # (B, C)
    finally:
        handle.remove()
    features = captured[-1].flatten(1).float()  # (B, D): what the final layer saw
    error = torch.softmax(logits.float(), dim=1) - F.one_hot(labels, logits.shape[1]).float()  # (B, C)
    bias_term = 1.0 if final.bias is not None else 0.0
    return error.norm(dim=1) * (features.pow(2).sum(dim=1) + bias_term).sqrt()


def per_example_gradient_norms(
    run_dir: Path, manifest: Manifest, mode: str, device: str, pixels: np.ndarray | None, batch_size: int = 64
) -> np.ndarray:
    """(N,) GraNd of every row of `manifest` under the run's trained weights."""
    from datadiet_cli.train.batches import split_batches
    from datadiet_cli.train.evaluate import model_and_data
    from datadiet_cli.train.recipes import Augment, steps_per_epoch

    model, data, _ = model_and_data(run_dir, manifest, device=device, pixels=pixels)  # fp32: gradients need it
    norms_of = exact_gradient_norms if mode == "exact" else last_layer_gradient_norms
    norms = torch.empty(data.count, dtype=torch.float64)
    batches = split_batches(np.arange(data.count), steps_per_epoch(data.count, batch_size))
    with torch.set_grad_enabled(mode == "exact"):
        for positions, images, labels in data.batches(batches, Augment.none, epoch_seed=0):
            norms[positions.cpu()] = norms_of(model, images, labels).double().cpu()
    return norms.numpy()
