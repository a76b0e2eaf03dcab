"""No file datadiet loads runs code (docs/security.md): hostile exported encoders, checkpoints and id files.

Every hostile file here would write a marker file if anything unpickled, exec'd or eval'd it; the
controls show that torch.export.load itself does run them, so the files are real attacks.
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from datadiet_cli.cli import app
from datadiet_cli.cluster.encoders import load_encoder, read_checkpoint
from datadiet_cli.cluster.programs import (
    check_calls,
    is_plain_arithmetic,
    load_program,
    shorten,
    silenced,
    sympy_guarded,
)
from datadiet_cli.errors import ModelFileError

runner = CliRunner()
CPU = torch.device("cpu")
SHARED_ENCODER = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "efficientnet_lite0_imagenet.pt2"
REFUSED = (
    ", which could run code on loading; datadiet loads only programs of torch operators and plain tensors, "
    "as torch.export.save writes them for an ordinary nn.Module"
)


class Tiny(torch.nn.Module):
    """conv -> scale by a buffer -> global average pool: (N, 3, 8, 8) -> (N, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3)) * self.scale


class WritesMarker:
    """Unpickling this creates the marker file: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A legitimate exported program with a dynamic batch."""
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(Tiny().eval(), (torch.rand(2, 3, 8, 8),), dynamic_shapes={"x": {0: batch}})
    path = tmp_path_factory.mktemp("programs") / "tiny.pt2"
    torch.export.save(exported, str(path))
    return path


def torch_saved(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def rewrite(source: Path, target: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """A copy of a .pt2 archive with its members (named without the archive's folder) edited."""
    with zipfile.ZipFile(source) as archive:
        folder = archive.namelist()[0].split("/", 1)[0] + "/"
        members = {name.removeprefix(folder): archive.read(name) for name in archive.namelist()}
    edit(members)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(folder + name, data)
    return target


def edit_json(members: dict[str, bytes], name: str, edit: Callable[[dict], None]) -> None:
    document = json.loads(members[name])
    edit(document)
    members[name] = json.dumps(document).encode()


def pickled_weight(marker: Path) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        config = "data/weights/model_weights_config.json"
        edit_json(members, config, lambda c: c["config"]["conv.bias"].update(use_pickle=True))
        path_name = json.loads(members[config])["config"]["conv.bias"]["path_name"]
        members[f"data/weights/{path_name}"] = torch_saved(WritesMarker(marker))

    return edit


def constant(marker: Path, path_name: str, payload: bytes) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        entry = {"path_name": path_name, "is_param": False, "use_pickle": True, "tensor_meta": None}
        members["data/constants/model_constants_config.json"] = json.dumps({"config": {"evil": entry}}).encode()
        members[f"data/constants/{path_name}"] = payload

    return edit


def sample_inputs(marker: Path) -> Callable[[dict[str, bytes]], None]:
    def edit(members: dict[str, bytes]) -> None:
        members["data/sample_inputs/model.pt"] = torch_saved(((WritesMarker(marker),), {}))

    return edit


def symbolic_shape(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """An input size whose expression sympy would eval: pure JSON, no pickle."""

    def edit(members: dict[str, bytes]) -> None:
        code = f"open({str(marker)!r}, 'w')"
        edit_json(members, "models/model.json", lambda m: m["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
                  .__setitem__(0, {"as_expr": {"expr_str": code, "hint": {"as_int": 2}}}))  # fmt: skip

    return edit


def argument_code(marker: Path) -> str:
    return f'x=open({str(marker)!r},"w")or"""' + "):\n    x = (([0"


def path_code(marker: Path) -> str:
    return f'conv.b"+str(open({str(marker)!r},"w"))+"'


def argument_name(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """A forward() argument name that torch.fx writes into `def forward(self, NAME)` and exec()s: the
    triple quote makes both places it appears one valid program, whose default argument runs."""
    name = argument_code(marker)

    def edit(members: dict[str, bytes]) -> None:
        edit_json(members, "models/model.json",
                  lambda m: m["graph_module"]["module_call_graph"][0]["signature"].update(forward_arg_names=[name]))  # fmt: skip

    return edit


def attribute_path(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """A parameter's path, which torch.fx writes as getattr(self.conv, "PART") in the module's source."""
    evil = path_code(marker)

    def rename(document: dict) -> None:
        for spec in document["graph_module"]["signature"]["input_specs"]:
            if spec.get("parameter", {}).get("parameter_name") == "conv.bias":
                spec["parameter"]["parameter_name"] = evil

    def edit(members: dict[str, bytes]) -> None:
        config = "data/weights/model_weights_config.json"
        edit_json(members, config, lambda c: c["config"].__setitem__(evil, c["config"].pop("conv.bias")))
        edit_json(members, "models/model.json", rename)

    return edit


def legacy_alias(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """A raw (unpickled) weight named like the legacy pickled-weights file, which torch then unpickles."""

    def edit(members: dict[str, bytes]) -> None:
        config = "data/weights/model_weights_config.json"
        edit_json(members, config, lambda c: c["config"]["conv.bias"].update(path_name="model.pt"))
        members["data/weights/model.pt"] = torch_saved(WritesMarker(marker))

    return edit


def guard_code(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """Guard code, which ExportedProgram.module() exec()s and the module runs on every call."""

    def edit(members: dict[str, bytes]) -> None:
        code = f"open({str(marker)!r}, 'w').close() is None"
        edit_json(members, "models/model.json", lambda m: m.__setitem__("guards_code", [code]))

    return edit


def torch_export_runs_it(path: Path) -> None:
    """The control: plain torch.export.load, .module() and one call, whatever fails along the way."""
    with silenced(), contextlib.suppress(Exception):
        torch.export.load(str(path)).module()(torch.rand(2, 3, 8, 8))


# -- item 1: pickles and code strings in an exported program never run ---------------------------------


def opaque_object(marker: Path) -> Callable[[dict[str, bytes]], None]:
    return constant(marker, "opaque_obj_0", pickle.dumps(WritesMarker(marker)))


def pickled_constant(marker: Path) -> Callable[[dict[str, bytes]], None]:
    return constant(marker, "tensor_0", torch_saved(WritesMarker(marker)))


@pytest.mark.parametrize(
    ("attack", "what"),
    [
        (pickled_weight, lambda marker: "weight 'conv.bias' stored as a pickle (data/weights/weight_1)"),
        (pickled_constant, lambda marker: "constant 'evil' stored as a pickle (data/constants/tensor_0)"),
        (opaque_object,
         lambda marker: "constant 'evil' stored as a pickled Python object (data/constants/opaque_obj_0)"),
        (sample_inputs, lambda marker: "sample inputs (data/sample_inputs/model.pt) that are not plain tensors"),
        (symbolic_shape,
         lambda marker: f"a symbolic shape {shorten(f'open({str(marker)!r}, {chr(39)}w{chr(39)})')} that is not plain "
                        "arithmetic"),
        (argument_name,
         lambda marker: f"argument names {shorten([argument_code(marker)])} that are not Python names"),
        (attribute_path,
         lambda marker: f"an attribute path {shorten(path_code(marker))} with quotes, backslashes or spaces"),
        (legacy_alias, lambda marker: "weight 'conv.bias' stored under an unexpected name (data/weights/model.pt)"),
    ],
)  # fmt: skip
def test_hostile_program_is_refused_and_nothing_runs(
    tmp_path: Path,
    program: Path,
    attack: Callable[[Path], Callable[[dict[str, bytes]], None]],
    what: Callable[[Path], str],
) -> None:
    marker = tmp_path / "m"
    evil = rewrite(program, tmp_path / "evil.pt2", attack(marker))
    torch_export_runs_it(evil)
    assert marker.exists(), "control: torch.export.load runs this file's code"
    marker.unlink()
    with pytest.raises(ModelFileError) as error:
        load_encoder(str(evil), None, CPU)
    assert str(error.value) == f"--encoder {evil}: refused: {what(marker)}{REFUSED}"
    assert not marker.exists()


def test_guard_code_in_a_program_is_never_executed(tmp_path: Path, program: Path) -> None:
    marker = tmp_path / "m"
    evil = rewrite(program, tmp_path / "evil.pt2", guard_code(marker))
    torch_export_runs_it(evil)
    assert marker.exists(), "control: torch.export.load(...).module() runs guard code"
    marker.unlink()
    loaded = load_program(evil)  # the graph itself is fine: it loads, and runs without the guard code
    with torch.inference_mode():
        loaded.module(torch.rand(3, 3, 8, 8))
    assert not marker.exists()


def test_cli_with_a_hostile_program_gives_one_line_and_runs_nothing(
    tmp_path: Path, program: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "m"
    evil = rewrite(program, tmp_path / "evil.pt2", pickled_weight(marker))
    manifest = tmp_path / "digits.parquet"
    assert runner.invoke(app, ["ingest", "builtin:digits", "-o", str(manifest), "-q"]).exit_code == 0
    capfd.readouterr()
    out = tmp_path / "out.parquet"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, ["cluster", str(manifest), "-o", str(out), "--encoder", str(evil)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: --encoder {evil}: refused: weight 'conv.bias' stored as a pickle (data/weights/weight_1){REFUSED}\n"
    )
    assert caught == [] and capfd.readouterr() == ("", "")
    assert not marker.exists() and not out.exists()


def custom_object(members: dict[str, bytes]) -> None:
    constant(Path("unused"), "custom_obj_0", b"")(members)


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (lambda m: m.__setitem__("data/aotinductor/model/model.so", b"\x7fELF"),
         "AOTInductor compiled code (data/aotinductor/model/model.so)"),
        (lambda m: m.__setitem__("data/weights/model.pt", b"PK"),
         "a member torch.export.save does not write (data/weights/model.pt)"),
        (custom_object, "constant 'evil' stored as a TorchScript object (data/constants/custom_obj_0)"),
        # torch overwrites fx's sanitised node names with the file's, which then appear in the module's source
        (lambda m: edit_json(m, "models/model.json",
                             lambda d: d["graph_module"]["graph"]["nodes"][0].update(name="a = 1; b")),
         "a node name 'a = 1; b' that is not a Python name"),
    ],
)  # fmt: skip
def test_native_code_and_unknown_members_are_refused(
    tmp_path: Path, program: Path, edit: Callable[[dict[str, bytes]], None], what: str
) -> None:
    evil = rewrite(program, tmp_path / "evil.pt2", edit)
    with pytest.raises(ModelFileError) as error:
        load_program(evil)
    assert str(error.value) == f"--encoder {evil}: refused: {what}{REFUSED}"


def test_a_graph_that_names_a_python_function_never_calls_it(
    tmp_path: Path, program: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A node's target is a dotted path resolved under torch: torch.os.system is one."""
    marker = tmp_path / "m"

    def add_call(document: dict) -> None:
        document["graph_module"]["graph"]["nodes"].insert(0, {
            "target": "torch.os.system", "name": "evil", "outputs": [{"as_int": 0}], "metadata": {},
            "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
        })  # fmt: skip

    evil = rewrite(program, tmp_path / "evil.pt2", lambda m: edit_json(m, "models/model.json", add_call))
    with pytest.raises(
        ModelFileError, match=rf"^--encoder {re.escape(str(evil))}: not a loadable torch.export program \("
    ):
        load_program(evil)
    assert not marker.exists() and capfd.readouterr() == ("", "")  # torch logged nothing


def test_graph_calls_must_be_torch_operators(tmp_path: Path) -> None:
    def module_calling(target: Callable[..., object], *args: object) -> torch.fx.GraphModule:
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        call = graph.call_function(target, (x, 1.0))
        graph.output(call)
        module = torch.fx.GraphModule(torch.nn.Module(), graph)
        call.args = (x, *args)  # after codegen: fx cannot print a function as an argument, a file can hold one
        return module

    check_calls(module_calling(torch.ops.aten.add.Tensor, 1.0), Path("ok.pt2"))
    check_calls(module_calling(operator.getitem, 0), Path("ok.pt2"))
    with pytest.raises(ModelFileError) as error:
        check_calls(module_calling(print), Path("evil.pt2"))
    assert (
        str(error.value)
        == f"--encoder evil.pt2: refused: a graph that uses 'print', which is not a torch operator{REFUSED}"
    )
    with pytest.raises(ModelFileError, match=r"^--encoder evil.pt2: refused: a graph that uses 'exec', "):
        check_calls(module_calling(torch.ops.aten.add.Tensor, (exec,)), Path("evil.pt2"))  # a callable as argument


def test_only_plain_arithmetic_reaches_sympy(tmp_path: Path) -> None:
    import sympy

    for safe in ("Symbol('s45', positive=True, integer=True)", "Mul(Integer(2), Pow(Symbol('s0'), Integer(2)))",
                 "Add(Mul(Integer(32), Symbol('s45')), Integer(1))", "Max(1, s0)", "32*s45", "FloorDiv(s0, 2)",
                 "Float('1.5', precision=53)", "Eq(Mod(s0, 32), 0)", "oo", "-oo"):  # fmt: skip
        assert is_plain_arithmetic(safe), safe
    marker = tmp_path / "m"
    for unsafe in (f"open({str(marker)!r}, 'w')", "__import__('os')", "Symbol('x').__class__", "eval('1')",
                   "Max('open(1)')", "Symbol(**{})", "S('1')", "lambda: 1", "[1]", "Symbol('x'\\\n)", "x.y"):  # fmt: skip
        assert not is_plain_arithmetic(unsafe), unsafe
    with sympy_guarded():
        assert sympy.sympify("Max(1, s0)") == sympy.Max(1, sympy.Symbol("s0"))
        with pytest.raises(Exception, match="not plain arithmetic"):
            sympy.sympify(f"open({str(marker)!r}, 'w')")
    assert not marker.exists()
    assert sympy.sympify("1 + 1") == 2  # the guard is gone afterwards


# -- item 1: legitimate programs load and embed exactly as torch.export.load's ---------------------------


def test_a_legitimate_program_loads_and_computes_exactly_as_torch_export_load(program: Path) -> None:
    x = torch.rand(5, 3, 8, 8)
    with torch.inference_mode():
        expected = torch.export.load(str(program)).module()(x)
        encoder = load_encoder(str(program), None, CPU)
        torch.testing.assert_close(encoder.module(x), expected, rtol=0, atol=0)
    assert encoder.sizes == [8] and encoder.batch == (1, 1024)


def test_a_program_saved_without_sample_inputs_loads(tmp_path: Path) -> None:
    exported = torch.export.export(Tiny().eval(), (torch.rand(2, 3, 8, 8),))
    exported._example_inputs = None  # as after some passes: torch.export.save writes an empty member
    torch.export.save(exported, str(tmp_path / "bare.pt2"))
    encoder = load_encoder(str(tmp_path / "bare.pt2"), None, CPU)
    assert encoder.batch == (2, 2) and encoder.module(torch.rand(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.shared
@pytest.mark.slow
def test_the_shared_efficientnet_loads_and_computes_exactly_as_torch_export_load() -> None:
    if not SHARED_ENCODER.is_file():
        pytest.skip(f"needs the shared encoder: {SHARED_ENCODER} is absent (../shared/models is not mounted)")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        encoder = load_encoder(str(SHARED_ENCODER), None, CPU)
        features = encoder.module(x)
        expected = torch.export.load(str(SHARED_ENCODER)).module()(x)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    assert features.shape == (2, 1280) and encoder.sizes == list(range(64, 513, 32)) and encoder.batch == (1, 65536)


# -- item 3: files that are not exported programs: one line, nothing else on stderr ----------------------


def not_programs(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of wrong file, and the reason its error line gives."""
    names = ("t.pt2", "e.pt2", "sd.pt2", "z.pt2", "tz.pt2", "l.pt2")
    text, empty, state, plain_zip, torch_zip, latin = (folder / name for name in names)
    text.write_text("not a model\n")
    empty.write_bytes(b"")
    torch.save(Tiny().state_dict(), state)
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with zipfile.ZipFile(torch_zip, "w") as archive:  # laid out like torch's archives, but no program
        archive.writestr("notes/version", "3")
        archive.writestr("notes/readme.txt", "hello")
    latin.write_bytes("modèle".encode("latin-1"))
    fix = "give a file written by torch.export.save"
    return {
        "text": (text, f"not a torch.export program (not a zip archive); {fix}"),
        "empty": (empty, f"not a torch.export program (not a zip archive); {fix}"),
        "latin-1": (latin, f"not a torch.export program (not a zip archive); {fix}"),
        "state dict": (state, "a torch.save file (a pickle), not a torch.export program; export the model with "
                              "torch.export.save, or give a state dict as --weights of swav-resnet50 or torchvision:NAME"),
        "zip": (plain_zip, f"not a torch.export program (a zip archive that torch cannot read); {fix}"),
        "torch zip": (torch_zip, f"not a torch.export program (a zip archive without archive_format 'pt2'); {fix}"),
    }  # fmt: skip


def test_files_that_are_not_programs_give_exactly_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "digits.parquet"
    assert runner.invoke(app, ["ingest", "builtin:digits", "-o", str(manifest), "-q"]).exit_code == 0
    capfd.readouterr()
    out = tmp_path / "out.parquet"
    for kind, (path, reason) in not_programs(tmp_path).items():
        before = path.read_bytes()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = runner.invoke(app, ["cluster", str(manifest), "-o", str(out), "--encoder", str(path)])
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: --encoder {path}: {reason}\n"), kind
        assert caught == [] and capfd.readouterr() == ("", ""), kind  # no warning, no log, no C++ message
        assert not out.exists() and path.read_bytes() == before


# -- item 2: --weights checkpoints load with weights_only=True -----------------------------------------


def test_weights_that_would_run_code_are_refused_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(torch_saved({"conv.weight": WritesMarker(marker)}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ModelFileError) as error:
            read_checkpoint(evil)
    assert str(error.value) == (
        f"--weights {evil}: holds Python objects besides tensors (io.open), which datadiet does not unpickle "
        "(they could run code); save a plain state dict with torch.save(model.state_dict(), FILE)"
    )
    assert caught == [] and not marker.exists()
    text, empty = tmp_path / "w.txt", tmp_path / "w.pth"
    text.write_text("weights\n")
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError) as error:
        read_checkpoint(text)
    assert str(error.value) == (
        f"--weights {text}: not a torch checkpoint (not a pickle that torch.load reads); "
        "save one with torch.save(state_dict, FILE)"
    )
    with pytest.raises(ModelFileError, match=r"^--weights .*w\.pth: an empty file, not a torch checkpoint$"):
        read_checkpoint(empty)


def test_an_exported_program_given_as_weights_is_named(tmp_path: Path, program: Path) -> None:
    with pytest.raises(ModelFileError) as error:
        read_checkpoint(program)
    assert (
        str(error.value) == f"--weights {program}: a torch.export program, not a checkpoint; give it as --encoder FILE"
    )


# -- item 2: .npy embeddings never unpickle ----------------------------------------------------------------


def test_npy_embeddings_are_loaded_without_pickle(tmp_path: Path) -> None:
    from datadiet_cli.cluster.sources import read_npy
    from datadiet_cli.errors import TableError

    marker = tmp_path / "m"
    objects, pickled, empty, npz = (tmp_path / name for name in ("o.npy", "p.npy", "e.npy", "z.npy"))
    np.save(objects, np.array([WritesMarker(marker)], dtype=object), allow_pickle=True)
    pickled.write_bytes(pickle.dumps(WritesMarker(marker)))
    empty.write_bytes(b"")
    with open(npz, "wb") as handle:
        np.savez(handle, x=np.zeros((2, 2), np.float32))
    assert not marker.exists()
    expected = {
        objects: "not a .npy array (Object arrays cannot be loaded when allow_pickle=False)",
        pickled: "not a .npy array (This file contains pickled (object) data. If you trust the file you can load it "
                 "unsafely using the `allow_pickle=` keyword argument or `pickle.load()`.)",
        empty: "not a .npy array (the file is empty)",
        npz: "a .npz archive, not a .npy array; save the matrix with numpy.save",
    }  # fmt: skip
    for path, reason in expected.items():
        with pytest.raises(TableError) as error:
            read_npy(path)
        assert str(error.value) == f"--embeddings {path}: {reason}"
    assert not marker.exists()
