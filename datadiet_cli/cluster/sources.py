"""Where the embeddings to cluster come from: encoders run over the images, or files saved earlier.

A saved file is Parquet (id + embedding, as `--save-embeddings` writes) or a .npy matrix with
an ids file; a saved folder holds Parquet parts (as `--save-embeddings` writes under torchrun).
Rows are matched to the manifest by id, so their order (and which part holds them) does not matter.
Under torchrun each rank embeds, or reads from a folder, only its own block of rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from datadiet_cli.cluster.embed import EmbedConfig, Embeddings, embed_manifest, load_pixels
from datadiet_cli.cluster.encoders import check_encoder, pair_weights
from datadiet_cli.distributed import SINGLE, Ranks
from datadiet_cli.errors import EmbeddingError, OptionError, TableError
from datadiet_cli.io.files import file_digest
from datadiet_cli.io.manifest import Manifest, read_manifest
from datadiet_cli.io.tables import (
    embedding_parts,
    read_embedding_ids,
    read_embedding_matrix,
    read_embeddings,
    read_embeddings_metadata,
)

ProgressCallback = Callable[[int, int], None]
# (description, unit) -> a context yielding the callback of one phase (decoding, one encoder's pass)
PhaseProgress = Callable[[str, str], AbstractContextManager[ProgressCallback | None]]


def no_progress(description: str, unit: str) -> AbstractContextManager[ProgressCallback | None]:
    """The PhaseProgress of a caller that shows none."""
    return nullcontext(None)


def embedding_sources(
    manifest: Manifest,
    encoders: Sequence[str],
    weights: Sequence[Path],
    files: Sequence[Path],
    ids_file: Path | None,
    config: EmbedConfig,
    root: Path | None = None,
    phase: PhaseProgress = no_progress,
    ranks: Ranks = SINGLE,
) -> list[Embeddings]:
    """Every requested source of embeddings, in order: the encoders', then the files'.

    Every encoder is checked before any image is decoded, and the images are decoded once
    for all encoders. `phase(description, unit)` gives each phase's progress callback.
    Each matrix holds this rank's rows, `ranks.shard(N)` (every row in one process).
    """
    paired = pair_weights(list(encoders), list(weights))
    for name, weight in zip(encoders, paired, strict=True):
        check_encoder(name, weight)
    rows = ranks.shard(manifest.num_rows)
    own = manifest.take(np.arange(rows.start, rows.stop)) if ranks.distributed else manifest
    pixels = None
    if encoders:
        with phase("decoding", "images") as progress:
            pixels = load_pixels(own, root, progress)
    sources = []
    for name, weight in zip(encoders, paired, strict=True):
        with phase(f"embedding ({Path(name).name})", "images") as progress:
            sources.append(embed_manifest(own, name, weight, config, root, pixels, progress))
    sources.extend(embeddings_from_file(manifest, path, ids_file, ranks) for path in files)
    return sources


# -- saved embeddings ------------------------------------------------------------------------------


def read_ids_file(path: Path) -> np.ndarray:
    """Ids for a .npy matrix: a Parquet file with an `id` column, or text with one id per line."""
    if not path.is_file():
        raise TableError(f"--embedding-ids {path}: no such file")
    if path.suffix == ".parquet":
        return read_manifest(path).ids()
    fix = "save the ids as UTF-8 text, one per line, or as Parquet with an id column"
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is not part of the first id
    except OSError as error:
        raise TableError(f"--embedding-ids {path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise TableError(
            f"--embedding-ids {path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); {fix}"
        ) from None
    if "\x00" in text:
        raise TableError(f"--embedding-ids {path}: a binary file (it holds NUL bytes), not text; {fix}")
    lines = text.splitlines()
    return np.asarray([line for line in lines if line != ""], dtype=object)


def read_npy(path: Path) -> np.ndarray:
    """A .npy array, never unpickled (allow_pickle=False: object arrays and pickles are refused)."""
    try:
        matrix = np.load(path, allow_pickle=False)
    except EOFError:
        raise TableError(f"--embeddings {path}: not a .npy array (the file is empty)") from None
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"--embeddings {path}: not a .npy array ({reason})") from None
    if not isinstance(matrix, np.ndarray):  # np.load opens a zip (.npz) whatever its name
        matrix.close()
        raise TableError(f"--embeddings {path}: a .npz archive, not a .npy array; save the matrix with numpy.save")
    return matrix


def read_embeddings_file(path: Path, ids_path: Path | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(ids, float32 matrix, metadata) from a Parquet embeddings file or a .npy matrix + ids file."""
    if path.suffix == ".npy":
        if ids_path is None:
            raise OptionError(f"--embeddings {path}: a .npy matrix needs --embedding-ids FILE (one id per row)")
        if not path.is_file():
            raise TableError(f"--embeddings {path}: no such file")
        matrix = read_npy(path)
        if matrix.ndim != 2 or not (
            np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)
        ):
            raise EmbeddingError(
                f"--embeddings {path}: holds a {matrix.dtype} array of shape {matrix.shape}, not (N, D) numbers"
            )
        ids = read_ids_file(ids_path)
        if len(ids) != len(matrix):
            raise EmbeddingError(f"--embedding-ids {ids_path}: {len(ids)} ids for {len(matrix)} rows of {path}")
        return ids, matrix.astype(np.float32, copy=False), {}
    if ids_path is not None:
        raise OptionError("--embedding-ids goes with a .npy --embeddings file; Parquet embeddings carry their ids")
    return read_embeddings(path)


def align_to_manifest(manifest: Manifest, ids: np.ndarray, matrix: np.ndarray, source: str) -> np.ndarray:
    """Rows of `matrix` reordered to the manifest's ids; extra ids are ignored, missing ones are an error."""
    return matrix[aligned_rows(manifest, ids, source)]


def aligned_rows(manifest: Manifest, ids: np.ndarray, source: str) -> np.ndarray:
    """(N,) int64: for each manifest row, the row of `ids` with its id; every manifest id must be there once."""
    position = {example_id: row for row, example_id in enumerate(ids)}
    if len(position) != len(ids):
        raise EmbeddingError(f"{source}: ids are not unique; every embedding needs its own id")
    wanted = manifest.ids()
    missing = [example_id for example_id in wanted if example_id not in position]
    if missing:
        raise EmbeddingError(
            f"{source}: {len(missing)} of the {len(wanted)} ids of {manifest.name} have no embedding "
            f"(e.g. '{missing[0]}'); embed the same dataset the manifest lists"
        )
    return np.fromiter((position[i] for i in wanted), dtype=np.int64, count=len(wanted))


def embeddings_from_file(
    manifest: Manifest, path: Path, ids_path: Path | None = None, ranks: Ranks = SINGLE
) -> Embeddings:
    """This rank's rows (all rows in one process) of a saved embeddings file or folder, in manifest order."""
    if path.is_dir():
        if ids_path is not None:
            raise OptionError("--embedding-ids goes with a .npy --embeddings file; Parquet embeddings carry their ids")
        return embeddings_from_folder(manifest, path, ranks)
    ids, matrix, metadata = read_embeddings_file(path, ids_path)
    aligned = matrix[aligned_rows(manifest, ids, str(path))[ranks.shard(manifest.num_rows)]]
    identity = {
        "name": path.name,
        "kind": "embeddings",
        "file": str(path.resolve()),
        "sha256": file_digest(path),
        "dim": int(matrix.shape[1]),
        "made_by": metadata.get("encoder"),
    }
    return Embeddings(matrix=aligned, identity=identity)


def embeddings_from_folder(manifest: Manifest, folder: Path, ranks: Ranks = SINGLE) -> Embeddings:
    """This rank's rows of a folder of Parquet parts: every part's ids are read to align, then only
    the vectors of the parts that hold this rank's rows (one part when the job that wrote the
    folder had as many ranks, and the same manifest)."""
    parts = embedding_parts(folder)
    ids = [read_embedding_ids(part) for part in parts]
    starts = np.cumsum([0, *map(len, ids)])
    wanted = aligned_rows(manifest, np.concatenate(ids), str(folder))[ranks.shard(manifest.num_rows)]
    holder = np.searchsorted(starts, wanted, side="right") - 1
    matrix: np.ndarray | None = None
    for part in np.unique(holder):
        vectors = read_embedding_matrix(parts[part])
        if matrix is None:
            matrix = np.empty((len(wanted), vectors.shape[1]), dtype=np.float32)
        if vectors.shape[1] != matrix.shape[1]:
            raise EmbeddingError(
                f"--embeddings {folder}: {parts[part].name} holds {vectors.shape[1]}-d embeddings, other parts "
                f"{matrix.shape[1]}-d; every embedding needs the same dimension"
            )
        here = holder == part
        matrix[here] = vectors[wanted[here] - starts[part]]
    assert matrix is not None  # every rank holds at least one row
    made_by = read_embeddings_metadata(parts[0]).get("encoder")
    identity = {
        "name": folder.name,
        "kind": "embeddings",
        "file": str(folder.resolve()),
        "sha256": folder_digest(parts) if ranks.main else None,  # only rank 0 writes the lineage
        "dim": int(matrix.shape[1]),
        "made_by": made_by,
    }
    return Embeddings(matrix=matrix, identity=identity)


def folder_digest(parts: Sequence[Path]) -> str:
    """sha256 over the parts' names and sha256 digests, in part order."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"{part.name}\0{file_digest(part)}\n".encode())
    return digest.hexdigest()
