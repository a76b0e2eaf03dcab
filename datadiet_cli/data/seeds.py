"""Every random stream datadiet draws, derived from the user's `--seed` here and nowhere else.

A stream is named by integers after the seed, so two uses of one seed within a step never share
numbers and adding a stream never shifts another. numpy streams (`rng`):

    rng(seed)                  prune/balance tie-break shuffle and keep random; score --metric random
    rng(seed, k)               probe k's random training subset (memorization, --probe-fraction)
    rng(seed, KMEANS_SAMPLE)   the rows k-means fits on (--fit-fraction)
    rng(seed, KMEANS_INIT)     k-means++ seeding
    rng(seed, draw)            theory: draw `draw` of a simulation

torch streams: `torch_seed(seed, epoch, stream)` per epoch (AUGMENT_STREAM: augmentation);
probe k trains with `probe_seed(seed, k)`. Example order and subsampling hash the example's
id (`id_hashes`, `id_hash`), so they do not depend on row order or on which other ids exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from datadiet_cli.errors import OptionError

# Stream numbers of the numpy streams named above. Their values are part of every seeded
# result already published: changing one changes outputs.
KMEANS_SAMPLE = 1
KMEANS_INIT = 2
# torch streams within an epoch.
AUGMENT_STREAM = 0

_MASK64 = (1 << 64) - 1
# The largest --seed (options.Seed refuses others): numpy's default_rng takes seeds >= 0, scikit-learn's
# random_state < 2**32, torch.manual_seed < 2**64. Every seed derived here stays valid for all three.
SEED_MAX = 2**32 - 1


def rng(seed: int, *stream: int) -> np.random.Generator:
    """The numpy generator of `stream` under `seed`; no stream is the seed's own (= default_rng(seed))."""
    return np.random.default_rng([seed, *stream])


def seed_problem(seed: int) -> str | None:
    """Why `seed` cannot seed every stream below (numpy, torch and scikit-learn all take 0..SEED_MAX), or None."""
    if 0 <= seed <= SEED_MAX:
        return None
    return f"{seed} is outside 0..{SEED_MAX} (2**32-1); a seed is a non-negative 32-bit integer"


def check_seed(seed: int) -> int:
    """`seed`, or an OptionError for library callers (the CLI's --seed option refuses the same values)."""
    problem = seed_problem(seed)
    if problem is not None:
        raise OptionError(f"--seed {problem}")
    return seed


def probe_seed(seed: int, probe: int) -> int:
    """The training seed of probe model `probe` (0-based) of a scoring run (wraps to stay <= SEED_MAX)."""
    return (seed + probe) % (SEED_MAX + 1)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """Steele et al.'s 64-bit finaliser: a bijection that scrambles every bit (uint64 arithmetic wraps)."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def torch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit torch seed for one random stream of one epoch (AUGMENT_STREAM)."""
    mixed = splitmix64(np.array([(seed * 1_000_003 + epoch * 7 + stream) & _MASK64], dtype=np.uint64))
    return int(mixed[0]) >> 1


def id_hashes(ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """(N,) ids -> (N,) uint64: a stable hash per id (blake2b), independent of which other ids are present."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little") for i in ids],
        dtype=np.uint64,
    )


def id_hash(example_id: str, seed: int) -> int:
    """A seeded 64-bit hash of one id: ranks ids for a per-class sample that listing order cannot change."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{example_id}".encode(), digest_size=8).digest(), "little")


def epoch_order(hashes: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """(N,) id hashes -> positions 0..N-1 in the order epoch `epoch` visits them.

    Sorted by splitmix64(id_hash ^ splitmix64(seed, epoch)): one fixed permutation of the full
    dataset per (seed, epoch), filtered to the kept ids, so runs on different pruned subsets see
    their common examples in the same relative order.
    """
    epoch_key = splitmix64(np.array([(seed * 1_000_003 + epoch) & _MASK64], dtype=np.uint64))
    return np.argsort(splitmix64(hashes ^ epoch_key), kind="stable")
