"""Encoders and embedding (datadiet_cli.embed): SwAV checkpoints, torchvision heads, exported programs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.cluster.embed import choose_image_size, embed_pixels, to_input
from datadiet_cli.cluster.encoders import (
    ENCODERS,
    Encoder,
    accepted_sizes,
    check_encoder,
    encoder_kind,
    load_encoder,
    pair_weights,
    swav_resnet50,
    swav_state_dict,
    takes_weights,
    torchvision_encoder,
)
from datadiet_cli.cluster.sources import align_to_manifest
from datadiet_cli.errors import EmbeddingError, ModelFileError, OptionError
from datadiet_cli.io.manifest import new_manifest, read_manifest
from datadiet_cli.io.tables import read_embeddings

runner = CliRunner()
CPU = torch.device("cpu")
SHARED_ENCODER = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "efficientnet_lite0_imagenet.pt2"


class TinyEncoder(torch.nn.Module):
    """conv -> global average pool: (N, 3, S, S) -> (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def tiny_model() -> TinyEncoder:
    torch.manual_seed(0)
    return TinyEncoder().eval()


@pytest.fixture(scope="module")
def tiny_program(tiny_model: TinyEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static-size (S = 16) exported program with a dynamic batch."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(tiny_model, (torch.rand(2, 3, 16, 16),), dynamic_shapes={"x": {0: batch}})
    path = tmp_path_factory.mktemp("programs") / "tiny.pt2"
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def swav_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A randomly initialised ResNet-50 saved like the official SwAV release (training-checkpoint layout)."""
    torch.manual_seed(0)
    backbone = {
        k: v for k, v in torchvision.models.resnet50(weights=None).state_dict().items() if not k.startswith("fc.")
    }
    state = {f"module.{key}": value for key, value in backbone.items()}
    state["module.projection_head.0.weight"] = torch.randn(2048, 2048)
    state["module.projection_head.0.bias"] = torch.randn(2048)
    state["module.projection_head.3.weight"] = torch.randn(128, 2048)
    state["module.prototypes.weight"] = torch.randn(3000, 128)
    path = tmp_path_factory.mktemp("swav") / "swav_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "state_dict": state}, path)
    return path, backbone


# -- SwAV ------------------------------------------------------------------------------------------


def test_swav_key_mapping_is_exact(swav_checkpoint: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, backbone = swav_checkpoint
    mapped = swav_state_dict(torch.load(path, weights_only=True))
    assert sorted(mapped) == sorted(backbone)
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # The bare state dict (torch.hub's layout, no "state_dict" nesting, no prefixes) maps the same way.
    assert sorted(swav_state_dict(backbone)) == sorted(backbone)


def test_swav_encoder_loads_weights_and_gives_2048_avgpool_features(
    swav_checkpoint: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, backbone = swav_checkpoint
    model, used = swav_resnet50(path)
    assert used == path
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in backbone.items())
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2048)


def test_swav_checkpoint_of_another_network_is_a_one_line_error(tmp_path: Path) -> None:
    wrong = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(
        ModelFileError, match=r"^--weights .*r18.pth: does not fit the encoder: .*missing keys \(e\.g\. "
    ):
        swav_resnet50(wrong)


def test_missing_swav_weights_names_where_to_put_them(tmp_path: Path) -> None:
    manifest = tmp_path / "digits.parquet"
    assert runner.invoke(app, ["ingest", "builtin:digits", "-o", str(manifest), "-q"]).exit_code == 0
    hub = tmp_path / "torch-home"
    result = runner.invoke(
        app, ["cluster", str(manifest), "-o", str(tmp_path / "o.parquet")], env={"TORCH_HOME": str(hub)}
    )
    expected = hub / "hub" / "checkpoints" / "swav_800ep_pretrain.pth.tar"
    assert result.exit_code == 1
    assert result.output == (
        f"error: no SwAV weights at {expected}; download swav_800ep_pretrain.pth.tar "
        "(https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar) on a machine with internet and put it "
        f"at {expected}, or pass --weights FILE (datadiet never downloads weights)\n"
    )


# -- torchvision -----------------------------------------------------------------------------------


def test_torchvision_encoder_drops_the_last_linear_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    weights = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), weights)
    model = torchvision_encoder("resnet18", weights).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        features = model(images)
        reference.fc = torch.nn.Identity()
        torch.testing.assert_close(features, reference(images))
    assert features.shape == (2, 512)
    # A checkpoint saved without its classifier loads too (that layer is dropped anyway).
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}, headless)
    torchvision_encoder("resnet18", headless)
    with pytest.raises(OptionError, match=r"^--encoder torchvision:resnet18 needs --weights FILE"):
        torchvision_encoder("resnet18", None)
    with pytest.raises(OptionError, match=r"^--encoder torchvision:nosuchnet: torchvision has no model 'nosuchnet'"):
        torchvision_encoder("nosuchnet", weights)


# -- exported programs and the embedding loop -------------------------------------------------------


def test_embedding_matches_the_program_on_converted_inputs(tiny_program: Path, tiny_model: TinyEncoder) -> None:
    encoder = load_encoder(str(tiny_program), None, CPU)
    assert encoder.sizes == [16] and encoder.identity["kind"] == "exported" and len(encoder.identity["sha256"]) == 64
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    embedded = embed_pixels(pixels, encoder, 16, batch_size=2, device=CPU)  # 3 batches, the last of one image
    with torch.inference_mode():
        upsampled = torch.nn.functional.interpolate(
            torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, size=(16, 16), mode="bilinear"
        )
        expected = tiny_model(upsampled).numpy()
    assert embedded.dtype == np.float32 and embedded.shape == (5, 4)
    np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-6)
    # Batch boundaries do not change the result (beyond the convolution's own rounding).
    np.testing.assert_allclose(
        embedded, embed_pixels(pixels, encoder, 16, batch_size=5, device=CPU), rtol=1e-6, atol=1e-7
    )


def test_grayscale_is_repeated_to_three_channels_and_values_scaled(tiny_program: Path) -> None:
    encoder = load_encoder(str(tiny_program), None, CPU)
    gray = np.random.default_rng(1).integers(0, 256, size=(3, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        embed_pixels(gray, encoder, 16, 8, CPU), embed_pixels(np.repeat(gray, 3, axis=3), encoder, 16, 8, CPU)
    )
    converted = to_input(torch.from_numpy(np.full((1, 2, 2, 1), 255, dtype=np.uint8)), 2, imagenet_normalise=False)
    assert converted.shape == (1, 3, 2, 2) and bool((converted == 1.0).all())
    normalised = to_input(torch.zeros(1, 2, 2, 3, dtype=torch.uint8), 2, imagenet_normalise=True)
    torch.testing.assert_close(normalised[0, :, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_accepted_sizes_from_a_programs_shape_constraints(tiny_model: TinyEncoder) -> None:
    batch, side = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("side", min=2, max=16)
    program = torch.export.export(
        tiny_model, (torch.rand(2, 3, 64, 64),), dynamic_shapes={"x": {0: batch, 2: 32 * side, 3: 32 * side}}
    )
    assert accepted_sizes(program) == list(range(64, 513, 32))


@pytest.mark.parametrize(
    ("sizes", "default", "native", "requested", "chosen"),
    [
        (list(range(64, 513, 32)), None, 32, None, 64),  # CIFAR on the shared EfficientNet
        (list(range(64, 513, 32)), None, 100, None, 128),
        (list(range(64, 513, 32)), None, 1000, None, 512),
        (None, None, 32, None, 64),
        (None, None, 300, None, 300),
        (None, 224, 32, None, 224),  # ImageNet encoders
        (list(range(64, 513, 32)), None, 32, 96, 96),
    ],
)  # fmt: skip
def test_choose_image_size(sizes: list[int] | None, default: int | None, native: int, requested: int | None,
                           chosen: int) -> None:  # fmt: skip
    encoder = Encoder(lambda x: x, False, sizes, default, {"name": "enc.pt2"})
    assert choose_image_size(encoder, native, requested) == chosen


def test_image_size_the_program_does_not_take() -> None:
    encoder = Encoder(lambda x: x, False, list(range(64, 513, 32)), None, {"name": "enc.pt2"})
    with pytest.raises(OptionError) as error:
        choose_image_size(encoder, 32, 100)
    assert str(error.value) == "--image-size 100: enc.pt2 takes 64, 96, ..., 512"


def test_align_to_manifest_reorders_ignores_extras_and_refuses_gaps() -> None:
    manifest = new_manifest(["b", "a"], None, {})
    matrix = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(align_to_manifest(manifest, np.array(["a", "b", "c"]), matrix, "e"), [[2, 3], [0, 1]])
    with pytest.raises(EmbeddingError, match=r"^e: 1 of the 2 ids of <manifest> have no embedding \(e\.g\. 'b'\)"):
        align_to_manifest(manifest, np.array(["a", "x", "c"]), matrix, "e")
    with pytest.raises(EmbeddingError, match=r"^e: ids are not unique"):
        align_to_manifest(manifest, np.array(["a", "a", "b"]), matrix, "e")


def test_every_registered_encoder_kind_is_reached_by_a_spec(tiny_program: Path) -> None:
    specs = {"swav": "swav-resnet50", "torchvision": "torchvision:resnet18", "pixels": "pixels",
             "exported": str(tiny_program)}  # fmt: skip
    assert {kind: encoder_kind(spec).kind for kind, spec in specs.items()} == {kind: kind for kind in ENCODERS}
    assert [spec for spec in specs.values() if takes_weights(spec)] == ["swav-resnet50", "torchvision:resnet18"]
    for spec in ("pixels", str(tiny_program)):  # the loaded encoder records the kind that loaded it
        assert load_encoder(spec, None, CPU).identity["kind"] == encoder_kind(spec).kind
    with pytest.raises(OptionError, match=r"^--encoder resnet18: not swav-resnet50, torchvision:NAME, or an existing"):
        encoder_kind("resnet18")


def test_pair_weights() -> None:
    assert pair_weights(["x.pt2", "swav-resnet50"], []) == [None, None]
    assert pair_weights(["torchvision:resnet18", "x.pt2", "swav-resnet50"], [Path("a"), Path("b")]) == [
        Path("a"),
        None,
        Path("b"),
    ]
    with pytest.raises(OptionError, match=r"^1 --weights for 2 encoders that take weights"):
        pair_weights(["torchvision:resnet18", "swav-resnet50"], [Path("a")])


# -- the command end to end ------------------------------------------------------------------------


def test_cli_embeds_clusters_and_round_trips_embeddings(tmp_path: Path, tiny_program: Path) -> None:
    manifest = tmp_path / "digits.parquet"
    assert runner.invoke(app, ["ingest", "builtin:digits", "-o", str(manifest), "-q"]).exit_code == 0
    saved, first, second = tmp_path / "emb.parquet", tmp_path / "a.parquet", tmp_path / "b.parquet"
    result = runner.invoke(app, ["cluster", str(manifest), "-o", str(first), "--encoder", str(tiny_program),
                                 "--save-embeddings", str(saved), "--batch-size", "500", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    clustered = read_manifest(first)
    ids, matrix, metadata = read_embeddings(saved)
    np.testing.assert_array_equal(ids, clustered.ids())
    assert matrix.shape == (clustered.num_rows, 4)
    assert metadata["encoder"]["name"] == "tiny.pt2" and metadata["encoder"]["image_size"] == 16
    fit = clustered.lineage().last("cluster").stats["fits"][0]
    assert fit["encoder"]["sha256"] == metadata["encoder"]["sha256"] and fit["encoder"]["dim"] == 4
    result = runner.invoke(app, ["cluster", str(manifest), "-o", str(second), "--embeddings", str(saved), "-q"])
    assert result.exit_code == 0, result.output
    again = read_manifest(second)
    for column in ("cluster", "proto_dist", "sup_proto_dist"):
        assert again.table.column(column).equals(clustered.table.column(column))
    assert adjusted_rand_score(clustered.labels(), clustered.groups("cluster")) > 0.0


def test_cli_weights_for_a_program_is_refused(tmp_path: Path, tiny_program: Path) -> None:
    manifest = tmp_path / "digits.parquet"
    assert runner.invoke(app, ["ingest", "builtin:digits", "-o", str(manifest), "-q"]).exit_code == 0
    result = runner.invoke(app, ["cluster", str(manifest), "-o", str(tmp_path / "o.parquet"), "--encoder", "nope.pt2"])
    assert result.exit_code == 2
    assert result.output == (
        "error: --encoder nope.pt2: not swav-resnet50, torchvision:NAME, or an existing torch.export file (.pt2)\n"
    )


@pytest.mark.shared
@pytest.mark.slow
def test_cifar10_sample_with_the_shared_efficientnet(tmp_path: Path, cifar10_root: Path) -> None:
    if not SHARED_ENCODER.is_file():
        pytest.skip(f"needs the shared encoder: {SHARED_ENCODER} is absent (../shared/models is not mounted)")
    full = tmp_path / "cifar.parquet"
    assert runner.invoke(app, ["ingest", str(cifar10_root), "--split", "train", "-o", str(full), "-q"]).exit_code == 0
    listed = read_manifest(full)
    labels = listed.labels()
    rows = np.sort(np.concatenate([np.flatnonzero(labels == c)[:30] for c in range(10)]))  # 300 images
    sample = tmp_path / "sample.parquet"
    from datadiet_cli.io.manifest import write_manifest

    write_manifest(listed.take(rows), sample)
    out = tmp_path / "clustered.parquet"
    result = runner.invoke(app, ["cluster", str(sample), "-o", str(out), "--encoder", str(SHARED_ENCODER), "-q"])
    assert result.exit_code == 0, result.output
    clustered = read_manifest(out)
    fit = clustered.lineage().last("cluster").stats["fits"][0]
    assert fit["encoder"]["image_size"] == 64 and fit["encoder"]["dim"] == 1280 and fit["encoder"]["kind"] == "exported"
    assert clustered.meta["scores"]["proto_dist"]["params"]["k"] == 10
    # ImageNet features separate CIFAR-10 classes far better than chance (ARI 0) even at 64 px.
    assert adjusted_rand_score(clustered.labels(), clustered.groups("cluster")) > 0.05
    proto, sup = clustered.score("proto_dist"), clustered.score("sup_proto_dist")
    assert (proto > 0).all() and np.corrcoef(proto, sup)[0, 1] > 0.3


def test_images_of_varying_sizes_are_streamed(tmp_path: Path, tiny_program: Path, make_image_tree) -> None:
    make_image_tree(tmp_path / "tree", {"a/1.png": (20, 30, 3), "a/2.png": (16, 16, 1), "b/1.png": (40, 24, 3),
                                        "b/2.png": (17, 19, 3), "b/3.png": (64, 64, 3)})  # fmt: skip
    manifest = tmp_path / "tree.parquet"
    assert runner.invoke(app, ["ingest", str(tmp_path / "tree"), "-o", str(manifest), "-q"]).exit_code == 0
    assert read_manifest(manifest).meta["dataset"]["image_shape"] is None
    saved = tmp_path / "emb.parquet"
    result = runner.invoke(app, ["cluster", str(manifest), "-o", str(tmp_path / "o.parquet"), "--encoder",
                                 str(tiny_program), "--save-embeddings", str(saved), "--batch-size", "2", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    _, matrix, metadata = read_embeddings(saved)
    assert matrix.shape == (5, 4) and np.isfinite(matrix).all() and metadata["encoder"]["image_size"] == 16


def test_pixels_encoder_is_the_flattened_rgb_at_native_size() -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 1) * 10
    encoder = load_encoder("pixels", None, CPU)
    assert choose_image_size(encoder, native_side=3, requested=None) == 3
    matrix = embed_pixels(pixels, encoder, 3, batch_size=1, device=CPU)
    gray = pixels.reshape(2, 9).astype(np.float32) / 255
    assert np.allclose(matrix, np.concatenate([gray, gray, gray], axis=1))  # grayscale repeated to RGB, channel-major
    with pytest.raises(OptionError, match="the pixels encoder has none"):
        check_encoder("pixels", Path("w.pt"))


def test_digits_chain_cluster_with_pixels_then_balance_by_cluster(tmp_path: Path) -> None:
    """ingest -> cluster (pixels) -> prune --score proto_dist -> balance --by cluster, on the demo data."""
    train, clustered = tmp_path / "train.parquet", tmp_path / "clustered.parquet"
    kept, balanced = tmp_path / "kept.parquet", tmp_path / "balanced.parquet"
    steps = [
        ["ingest", "builtin:digits", "-o", str(train)],
        ["cluster", str(train), "-o", str(clustered), "--encoder", "pixels"],
        ["prune", str(clustered), "-o", str(kept), "--score", "proto_dist", "--keep", "hard", "--fraction", "0.3"],
        ["balance", str(kept), "-o", str(balanced), "--by", "cluster"],
    ]
    for step in steps:
        result = runner.invoke(app, [*step, "--quiet"])
        assert result.exit_code == 0, result.output
    full = read_manifest(clustered)
    assert adjusted_rand_score(full.labels(), full.groups("cluster")) > 0.5  # raw pixels separate digits well
    after = read_manifest(balanced)
    clusters_full = np.bincount(full.groups("cluster"), minlength=10)
    clusters_after = np.bincount(after.groups("cluster"), minlength=10)
    floors = np.minimum(clusters_full, np.ceil(0.5 * read_manifest(kept).num_rows / full.num_rows * clusters_full))
    assert np.all(clusters_after >= floors)
    assert [step["command"] for step in after.meta["lineage"]] == ["ingest", "cluster", "prune", "balance"]


# -- programs with a fixed batch, and inputs datadiet cannot feed ----------------------------------


def export_program(
    model: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_shapes: dict | None = None
) -> Path:
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes), str(path))
    return path


def test_a_static_batch_program_embeds_in_batches_of_exactly_its_size(
    tmp_path: Path, tiny_model: TinyEncoder, make_image_tree
) -> None:
    """Exported with batch 3 and no dynamic shapes: 7 rows go in as 3 + 3 + (1 padded to 3), whatever --batch-size."""
    static = export_program(tiny_model, torch.rand(3, 3, 8, 8), tmp_path / "static3.pt2")
    encoder = load_encoder(str(static), None, CPU)
    assert encoder.batch == (3, 3) and encoder.sizes == [8]
    written = make_image_tree(tmp_path / "tree", {f"{'ab'[i % 2]}/{i}.png": (8, 8, 3) for i in range(7)})
    manifest = tmp_path / "tree.parquet"
    assert runner.invoke(app, ["ingest", str(tmp_path / "tree"), "-o", str(manifest), "-q"]).exit_code == 0
    listed = read_manifest(manifest)
    pixels = np.stack([written[path] for path in listed.table.column("path").to_pylist()])
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).numpy()
    calls: list[int] = []
    recording = dataclasses.replace(encoder, module=lambda x: calls.append(len(x)) or encoder.module(x))
    for batch_size in (1, 2, 3, 500):
        calls.clear()
        embedded = embed_pixels(pixels, recording, 8, batch_size, CPU)
        assert calls == [3, 3, 3]
        np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-6)
        saved = tmp_path / f"emb{batch_size}.parquet"
        result = runner.invoke(app, ["cluster", str(manifest), "-o", str(tmp_path / f"o{batch_size}.parquet"),
                                     "--encoder", str(static), "--k", "2", "--batch-size", str(batch_size),
                                     "--save-embeddings", str(saved), "-q"])  # fmt: skip
        assert result.exit_code == 0, result.output
        ids, matrix, _ = read_embeddings(saved)
        np.testing.assert_array_equal(ids, listed.ids())
        np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-6)


def test_a_batch_with_a_least_size_is_padded(tmp_path: Path, tiny_model: TinyEncoder) -> None:
    batch = torch.export.Dim("batch", min=2, max=4)
    program = export_program(tiny_model, torch.rand(2, 3, 8, 8), tmp_path / "b2to4.pt2", {"x": {0: batch}})
    encoder = load_encoder(str(program), None, CPU)
    assert encoder.batch == (2, 4)
    pixels = np.random.default_rng(2).integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255).numpy()
    for batch_size in (1, 2, 5, 128):  # 1 -> 2 (each padded), 2 -> 2+2+2+(1 padded), 5 and 128 -> 4 + 3
        np.testing.assert_allclose(embed_pixels(pixels, encoder, 8, batch_size, CPU), expected, rtol=1e-5, atol=1e-6)


def test_a_program_for_other_inputs_is_refused_in_one_line(tmp_path: Path) -> None:
    gray = export_program(torch.nn.Conv2d(1, 2, 3), torch.rand(2, 1, 8, 8), tmp_path / "gray.pt2")
    with pytest.raises(ModelFileError) as error:
        load_encoder(str(gray), None, CPU)
    assert str(error.value) == (
        f"--encoder {gray}: takes a float32 input of shape (2, 1, 8, 8); datadiet feeds one float32 batch of RGB "
        "images (N, 3, S, S); export the encoder for that input"
    )


def test_an_encoder_that_fails_on_a_batch_is_one_line() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x48 and 12x4)\nsecond line")

    encoder = Encoder(broken, False, None, None, {"name": "enc.pt2"})
    with pytest.raises(ModelFileError) as error:
        embed_pixels(np.zeros((2, 4, 4, 3), np.uint8), encoder, 4, 8, CPU)
    assert str(error.value) == (
        "--encoder enc.pt2: failed on a batch of shape (2, 3, 4, 4) (mat1 and mat2 shapes cannot be multiplied "
        "(2x48 and 12x4))"
    )
