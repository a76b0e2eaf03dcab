"""k-means over rows spread across ranks: where a row lives, fetching rows from their owners,
and the few global reductions k-means++ and Lloyd need beyond plain sums.

Under torchrun each rank holds a contiguous block of the rows (rank order is row order) and
calls every function here with the same arguments but its own rows; every rank gets the same
answer. At world size 1 each function is the plain one-process torch call, with no collective
and no other arithmetic, so one process computes exactly what it computed before torchrun
support. Rows travel between ranks as float64, which holds float32 values exactly: a fetched
row is bit-equal to its owner's. torch is imported inside functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from datadiet_cli.distributed import SINGLE, Ranks, all_sum

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RowBlocks:
    """Where the rows lie: rank r holds global rows starts[r]:starts[r + 1] (a block may be empty)."""

    starts: np.ndarray  # (world + 1,) int64, non-decreasing
    rank: int  # this process's rank

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    @property
    def start(self) -> int:
        return int(self.starts[self.rank])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.starts)

    def owner(self, row: int) -> int:
        """The rank holding global row `row` (0 <= row < total)."""
        return int(np.searchsorted(self.starts, row, side="right")) - 1


def row_blocks(ranks: Ranks, count: int) -> RowBlocks:
    """Every rank's block, from each rank's own `count` of rows (one collective under torchrun)."""
    if not ranks.distributed:
        return RowBlocks(np.array([0, count], dtype=np.int64), 0)
    counts = np.zeros(ranks.world, dtype=np.int64)
    counts[ranks.rank] = count
    return RowBlocks(np.concatenate([[0], np.cumsum(all_sum(ranks, counts))]), ranks.rank)


def fetch_rows(ranks: Ranks, blocks: RowBlocks, points: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
    """(len(rows), D) the global `rows`, on every rank (each owner contributes its own)."""
    if not ranks.distributed:
        return points[list(rows)]
    import torch

    owned = np.zeros((len(rows), points.shape[1]), dtype=np.float64)
    for slot, row in enumerate(rows):
        if blocks.owner(row) == ranks.rank:
            owned[slot] = points[row - blocks.start].double().cpu().numpy()
    return torch.from_numpy(all_sum(ranks, owned)).to(device=points.device, dtype=points.dtype)


def sums_by_rank(ranks: Ranks, local: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """The sum over ranks of each rank's (T,) float64 `local`, and the (world, T) table of every rank's,
    on every rank (one collective). The sum adds the table's rows in rank order, the same bits everywhere."""
    import torch

    if not ranks.distributed:
        return local, local.cpu().numpy()[None]
    table = np.zeros((ranks.world, len(local)), dtype=np.float64)
    table[ranks.rank] = local.cpu().numpy()
    table = all_sum(ranks, table)
    return torch.from_numpy(table.sum(0)).to(local.device), table


def draw_rows(
    ranks: Ranks,
    blocks: RowBlocks,
    cumulative: torch.Tensor,
    totals: np.ndarray,
    targets: np.ndarray,
    points: torch.Tensor,
) -> tuple[list[int], torch.Tensor]:
    """The global rows where `targets` fall in the running sum of a per-row weight, and those rows.

    `cumulative`: (n,) float64, the running sum of this rank's weights (torch.cumsum); `totals`:
    (world,) every rank's sum of its weights (from `sums_by_rank`). The running sum over all rows
    continues from rank to rank; a target past its end takes the last row, as torch.searchsorted
    clamped to the last index does in one process. One collective.
    """
    import torch

    if not ranks.distributed:
        found = torch.searchsorted(cumulative, torch.from_numpy(targets).to(cumulative.device))
        rows = found.clamp_(max=blocks.total - 1).tolist()
        return rows, points[rows]
    bases = np.concatenate([[0.0], np.cumsum(totals)[:-1]])  # the same bits on every rank: same inputs, same order
    holding = np.flatnonzero(blocks.counts > 0)
    owned = np.zeros((len(targets), points.shape[1] + 1), dtype=np.float64)  # the row, then its global index
    for slot, target in enumerate(targets):
        reached = holding[bases[holding] + totals[holding] >= target]
        owner = int(reached[0]) if len(reached) else int(holding[-1])
        if owner == ranks.rank:
            local = int(torch.searchsorted(cumulative, torch.tensor([target - bases[owner]], dtype=cumulative.dtype,
                                                                    device=cumulative.device)))  # fmt: skip
            local = min(local, len(cumulative) - 1)
            owned[slot, :-1] = points[local].double().cpu().numpy()
            owned[slot, -1] = blocks.start + local
    shared = all_sum(ranks, owned)
    rows = torch.from_numpy(shared[:, :-1]).to(device=points.device, dtype=points.dtype)
    return shared[:, -1].astype(np.int64).tolist(), rows


def largest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` largest values, largest first, equal values in index order.

    torch.topk leaves the order of equal values to its implementation, and the empty-cluster rule
    must pick the same rows whichever rank holds them. Without ties it is torch.topk's answer.
    """
    import torch

    if count == 0:
        return torch.zeros(0, dtype=torch.int64, device=values.device)
    threshold = torch.topk(values, count).values[-1]
    candidates = torch.nonzero(values >= threshold).flatten()  # in index order
    order = torch.sort(values[candidates], descending=True, stable=True).indices
    return candidates[order[:count]]


def farthest_rows(ranks: Ranks, points: torch.Tensor, squared: torch.Tensor, count: int) -> torch.Tensor:
    """(count, D) the rows with the largest `squared` over all ranks, largest first, ties to the lowest row.

    Two collectives under torchrun: every rank's `count` largest, then the chosen rows.
    """
    import torch

    if not ranks.distributed:
        return points[largest(squared, count)]
    local = min(count, len(squared))
    where = largest(squared, local)
    table = np.zeros((ranks.world, count), dtype=np.float64)
    table[ranks.rank] = -np.inf
    table[ranks.rank, :local] = squared[where].double().cpu().numpy()
    flat = all_sum(ranks, table).reshape(-1)  # rank-major: a stable sort keeps lower ranks (rows) first among ties
    chosen = np.argsort(-flat, kind="stable")[:count]
    owned = np.zeros((count, points.shape[1]), dtype=np.float64)
    for slot, entry in enumerate(chosen):
        rank, position = divmod(int(entry), count)
        if rank == ranks.rank:
            owned[slot] = points[int(where[position])].double().cpu().numpy()
    return torch.from_numpy(all_sum(ranks, owned)).to(device=points.device, dtype=points.dtype)


def mean_variance(points: torch.Tensor, points_sq: torch.Tensor, ranks: Ranks = SINGLE) -> float:
    """Mean over features of the variance of every rank's rows, from the row norms already computed.

    One process: the float32 mean (as before torchrun support); under torchrun, float64 sums.
    """
    if not ranks.distributed:
        mean = points.mean(0).double()
        return float((points_sq.double().mean() - mean.square().sum()) / points.shape[1])
    import torch

    sums = torch.cat([points.sum(0, dtype=torch.float64), points_sq.sum(dtype=torch.float64).reshape(1)])
    totals = all_sum(ranks, np.append(sums.cpu().numpy(), len(points)))
    rows = totals[-1]
    mean = totals[:-2] / rows
    return float((totals[-2] / rows - np.square(mean).sum()) / points.shape[1])
