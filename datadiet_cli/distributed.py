"""Running under torchrun: which rank this process is, its process group, and the collectives datadiet uses.

`torchrun --nproc-per-node N -m datadiet_cli train|score|cluster|evaluate ...` (or `srun torchrun`
on SLURM) starts one process per device with RANK, WORLD_SIZE and LOCAL_RANK set. `launched()`
reads them, starts the process group (NCCL between CUDA devices, gloo on CPUs), gives each rank
`cuda:LOCAL_RANK` and tears the group down at the end. Outside torchrun it yields `SINGLE` and
nothing else happens: torch.distributed is not even imported.

The collectives take and return numpy arrays on the host, because what the stages exchange is
small (sums, counts, per-row scores by row position); only `all_sum_` works in place on a device
tensor. `together()` makes one rank's DatadietError every rank's: all ranks stop with the failing
rank's line instead of waiting forever for a peer that has gone.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np

from datadiet_cli import errors
from datadiet_cli.device import select_device
from datadiet_cli.errors import DatadietError, LaunchError, OptionError, RankLost

if TYPE_CHECKING:
    import torch

# Bytes of an error message sent to the other ranks (longer messages are cut with an ellipsis).
MESSAGE_BYTES = 1024
# How long a rank waits in a collective for the others. Ranks finish a phase at different times
# (one more probe to train, a slower shard of images to embed), and the process group's default
# limit (10 minutes under NCCL) would end a healthy job; a rank that dies is noticed by torchrun,
# which stops the job, so a long limit does not leave a broken job waiting.
PEER_PATIENCE = timedelta(days=7)
# torch modules with functions whose default argument is the default process group
# (`group=group.WORLD`), evaluated at import. torch.export's loader (a .pt2 encoder) imports
# them; imported after the group has started, they keep it alive past destroy_process_group and its
# gloo threads race the interpreter's exit: a rank that had finished died with SIGABRT ("terminate
# called without an active exception") in 3 of 5 torchrun runs of `cluster`. Imported before, they hold None.
GROUP_CAPTURING_MODULES = ("torch.distributed.nn", "torch.distributed._shard.sharded_tensor")
# What torchrun sets; WORLD_SIZE alone decides whether this process is part of a distributed job.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; `Ranks()` (SINGLE) is a plain one-process run."""

    rank: int = 0  # 0..world-1; rank 0 writes every output
    world: int = 1  # processes in the job (torchrun's WORLD_SIZE)
    local_rank: int = 0  # index on this node: the CUDA device it uses
    device: str = "auto"  # the device this rank computes on (cuda:LOCAL_RANK under torchrun on GPUs)
    comm: str = "cpu"  # where collectives' tensors live: cuda:LOCAL_RANK for NCCL, cpu for gloo

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous block of `count` rows; blocks differ in size by at most one,
        the first `count % world` ranks holding the larger ones (as np.array_split)."""
        base, extra = divmod(count, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


SINGLE = Ranks()


def from_environment(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The ranks torchrun describes in `environ`; SINGLE when WORLD_SIZE is unset (not under torchrun)."""
    if "WORLD_SIZE" not in environ:
        return SINGLE
    values = {}
    for name in LAUNCH_VARIABLES:
        text = environ.get(name, "0" if name != "WORLD_SIZE" else "")
        try:
            values[name] = int(text)
        except ValueError:
            raise LaunchError(f"{name}={text!r} is not a whole number; launch with torchrun, which sets it") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise LaunchError(
            f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not describe a job; launch with torchrun"
        )
    return Ranks(rank, world, local)


def rank_device(requested: str, ranks: Ranks) -> str:
    """The device a rank computes on: under torchrun, `auto` and `cuda` mean this rank's own GPU."""
    if not ranks.distributed:
        return requested
    if requested.startswith("cuda:"):
        raise OptionError(f"--device {requested}: under torchrun each rank takes cuda:LOCAL_RANK; use --device cuda")
    if requested == "mps":
        raise OptionError("--device mps: torch.distributed does not run on Apple's MPS; use --device cpu")
    if select_device(requested).type != "cuda":  # also refuses --device cuda where there is no GPU
        return "cpu"
    import torch

    if ranks.local_rank >= torch.cuda.device_count():
        raise LaunchError(
            f"LOCAL_RANK={ranks.local_rank} but this node has {torch.cuda.device_count()} CUDA device(s); "
            "start at most one process per GPU (torchrun --nproc-per-node)"
        )
    return f"cuda:{ranks.local_rank}"


@contextmanager
def launched(device: str = "auto") -> Iterator[Ranks]:
    """This process's Ranks for the length of a command; under torchrun, with the process group up.

    A process group already started by the caller (a test driving several commands) is reused
    and left running.
    """
    ranks = from_environment()
    if not ranks.distributed:
        yield replace(SINGLE, device=device)
        return
    import torch.distributed as dist

    chosen = rank_device(device, ranks)
    ranks = replace(ranks, device=chosen, comm=chosen if chosen.startswith("cuda") else "cpu")
    owned = not dist.is_initialized()
    if owned:
        for name in GROUP_CAPTURING_MODULES:  # before the group exists: see GROUP_CAPTURING_MODULES
            importlib.import_module(name)
        if chosen.startswith("cuda"):
            import torch

            torch.cuda.set_device(chosen)
        dist.init_process_group("nccl" if chosen.startswith("cuda") else "gloo", timeout=PEER_PATIENCE)
    try:
        with peers_lost(ranks):
            yield ranks
    finally:
        if owned:
            dist.destroy_process_group()


@contextmanager
def peers_lost(ranks: Ranks) -> Iterator[None]:
    """A collective that fails because another rank is gone becomes one line naming this rank."""
    import torch.distributed as dist

    try:
        yield
    except dist.DistError:
        raise RankLost(
            f"rank {ranks.rank}: lost contact with another rank of the job (the first error above says why); "
            "nothing was written"
        ) from None


@contextmanager
def together(ranks: Ranks) -> Iterator[None]:
    """Run a block that may fail on some ranks only; afterwards every rank knows.

    When any rank raises a DatadietError inside, every rank raises the same class with the
    message of the lowest failing rank (prefixed "rank R:" unless R is 0). Only rank 0 prints it
    (`silent_here`); every rank exits with its exit code.
    """
    if not ranks.distributed:
        yield
        return
    failure: DatadietError | None = None
    try:
        yield
    except DatadietError as error:
        failure = error
    statuses = all_gather_bytes(ranks, encode_failure(failure))
    for rank, status in enumerate(statuses):
        if status:
            raise decode_failure(status, rank, ranks)


def encode_failure(failure: DatadietError | None) -> bytes:
    if failure is None:
        return b""
    text = f"{type(failure).__name__}\n{' '.join(str(failure).split())}".encode()
    return text if len(text) <= MESSAGE_BYTES else text[: MESSAGE_BYTES - 3] + "…".encode()


def decode_failure(status: bytes, rank: int, ranks: Ranks) -> DatadietError:
    """The error a failing rank sent, as an instance of its own class (looked up in errors.py by name)."""
    name, _, message = status.decode(errors="replace").partition("\n")
    kind = getattr(errors, name, None)
    if not (isinstance(kind, type) and issubclass(kind, DatadietError)):
        kind = DatadietError
    error = kind(message if rank == 0 else f"rank {rank}: {message}")
    error.silent_here = not ranks.main  # type: ignore[attr-defined]
    return error


# -- collectives on host arrays ----------------------------------------------------------------------


def _tensor(ranks: Ranks, array: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(ranks.comm)


def all_sum(ranks: Ranks, array: np.ndarray) -> np.ndarray:
    """The element-wise sum of `array` over all ranks (every rank passes the same shape and dtype)."""
    if not ranks.distributed:
        return array
    import torch.distributed as dist

    tensor = _tensor(ranks, array)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def all_sum_(ranks: Ranks, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (on the device it lives on; NCCL needs it on the GPU)."""
    if ranks.distributed:
        import torch.distributed as dist

        moved = tensor.to(ranks.comm)
        dist.all_reduce(moved)
        if moved is not tensor:
            tensor.copy_(moved)
    return tensor


def broadcast(ranks: Ranks, array: np.ndarray | None, dtype: np.dtype | type, width: int = 0) -> np.ndarray:
    """Rank 0's array on every rank. Rank 0 passes it; the others pass None with the same dtype
    (and, for 2-d arrays, the same `width`); the number of rows travels with it."""
    if not ranks.distributed:
        assert array is not None
        return array
    import torch.distributed as dist

    rows = _tensor(ranks, np.array([0 if array is None else len(array)], dtype=np.int64))
    dist.broadcast(rows, 0)
    shape = (int(rows.item()), width) if width else (int(rows.item()),)
    data = _tensor(ranks, np.asarray(array, dtype=dtype) if ranks.main else np.empty(shape, dtype=dtype))
    dist.broadcast(data, 0)
    return data.cpu().numpy()


def gather_rows(ranks: Ranks, array: np.ndarray) -> np.ndarray | None:
    """Every rank's rows concatenated in rank order, on rank 0 (None elsewhere).

    Ranks may hold different numbers of rows; the other dimensions and the dtype must agree.
    """
    if not ranks.distributed:
        return array
    import torch
    import torch.distributed as dist

    counts = _tensor(ranks, np.array([len(array)], dtype=np.int64))
    sizes = [torch.zeros_like(counts) for _ in range(ranks.world)]
    dist.all_gather(sizes, counts)
    longest = max(int(size.item()) for size in sizes)
    padded = np.zeros((longest, *array.shape[1:]), dtype=array.dtype)
    padded[: len(array)] = array
    tensor = _tensor(ranks, padded)
    parts = [torch.empty_like(tensor) for _ in range(ranks.world)] if ranks.main else None
    dist.gather(tensor, parts, dst=0)
    if parts is None:
        return None
    return np.concatenate([part.cpu().numpy()[: int(size.item())] for part, size in zip(parts, sizes, strict=True)])


def all_gather_bytes(ranks: Ranks, payload: bytes) -> list[bytes]:
    """Every rank's `payload` (at most MESSAGE_BYTES), on every rank, in rank order."""
    import torch
    import torch.distributed as dist

    buffer = np.zeros(MESSAGE_BYTES + 2, dtype=np.uint8)
    buffer[:2] = np.frombuffer(len(payload).to_bytes(2, "little"), dtype=np.uint8)
    buffer[2 : 2 + len(payload)] = np.frombuffer(payload, dtype=np.uint8)
    tensor = _tensor(ranks, buffer)
    parts = [torch.empty_like(tensor) for _ in range(ranks.world)]
    dist.all_gather(parts, tensor)
    texts = []
    for part in parts:
        raw = part.cpu().numpy()
        texts.append(raw[2 : 2 + int.from_bytes(raw[:2].tobytes(), "little")].tobytes())
    return texts


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()
