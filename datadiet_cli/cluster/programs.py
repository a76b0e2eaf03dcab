"""Loading an exported encoder (a `torch.export.save` file, .pt2) without running code from the file.

`torch.export.load` trusts its file. A .pt2 archive is a zip whose weights, constants and sample
inputs may be pickles that torch unpickles with `weights_only=False`; it may carry AOTInductor
shared libraries, guard code that `ExportedProgram.module()` passes to `exec`, and symbolic
shapes that sympy parses with `eval`; its argument names become Python source that
`module()` `exec`s; and its graph names its calls by dotted path. So
`load_program` reads the archive itself first, through torch's own zip reader, and refuses:

- anything but the members `torch.export.save` writes for one program (so no AOTInductor code,
  no older pickled formats, no `torch.save` pickle);
- weights and constants stored as pickles, TorchScript or Python objects (plain tensors are raw
  bytes plus JSON metadata, which torch reads without unpickling);
- sample inputs that do not load with `torch.load(weights_only=True)` (torch would retry with
  `weights_only=False`);
- symbolic-shape expressions that are not plain arithmetic on sympy's classes;
- node and argument names that are not Python names, and attribute paths with quotes.

Then torch deserializes what is left, inside a guard that refuses any other string sympy would
`eval`, and with warnings and torch's log silenced (a bad file gives one error, nothing else).
The names `module()` writes into the Python source it `exec`s are checked again on the loaded
program; `module(check_guards=False)` never `exec`s the file's guard code; and every call in
the resulting graphs must be a torch operator or plain arithmetic before the module is returned.
torch is imported inside functions.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import keyword
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datadiet_cli.errors import ModelFileError

if TYPE_CHECKING:
    import torch

MODEL = "model"  # the one program torch.export.save writes
# Metadata records of torch's zip writer: read as text or not at all.
FIXED_MEMBERS = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
                 ".format_version", ".storage_alignment")  # fmt: skip
MODEL_JSON = f"models/{MODEL}.json"
SAMPLE_INPUTS = f"data/sample_inputs/{MODEL}.pt"
WEIGHTS_CONFIG = f"data/weights/{MODEL}_weights_config.json"
CONSTANTS_CONFIG = f"data/constants/{MODEL}_constants_config.json"
EXTRA_DIR = "extra/"
AOTINDUCTOR_DIR = "data/aotinductor/"
# The raw tensor payloads torch.export.save names weight_0, weight_1, ... and tensor_0, tensor_1, ...
PAYLOAD_NAME = {"weight": re.compile(r"weight_[0-9]+"), "constant": re.compile(r"tensor_[0-9]+")}
CONSTANT_KINDS = {"custom_obj_": "a TorchScript object", "opaque_obj_": "a pickled Python object"}
# Symbol names in sympy's printed form (s0, u1, ...); strings in it are names or numbers, never code.
SYMBOL_NAME = re.compile(r"[a-z]+[0-9]+")
PLAIN_STRING = re.compile(r"[A-Za-z0-9_.+\-]*")
KEYWORD = re.compile(r"[a-z][a-z_]*")
PRINTABLE = re.compile(r"[ -\[\]-~]*")  # printable ASCII but the backslash
ARITHMETIC_NODES = (
    ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.keyword,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not, ast.Invert,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.And, ast.Or, ast.BitAnd, ast.BitOr, ast.BitXor,
)  # fmt: skip
# model.json keys whose strings torch.fx writes into generated Python source: node names (raw, not
# sanitised, when torch deserializes) and the attribute paths of parameters, buffers and constants.
SOURCE_NAME_KEYS = ("", "name", "as_name")
ATTRIBUTE_PATH_KEYS = ("parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "user_input_name")
ATTRIBUTE_PATH = re.compile(r"[^\"'\\\x00-\x20\x7f]*")  # no quotes, backslashes, spaces or control characters
SAFE_NODE_OPS = ("placeholder", "output", "get_attr", "call_function")
NOT_A_PROGRAM = "give a file written by torch.export.save"


class UnsafeProgram(Exception):
    """Raised while torch deserializes, when the file holds code for sympy's eval or fx's exec."""


@dataclass(frozen=True)
class Program:
    """A program loaded without running code from its file."""

    module: torch.nn.Module  # the unlifted GraphModule, checked to call only torch operators
    exported: Any  # the torch.export.ExportedProgram it came from (its signature and shape constraints)


def refused(path: Path, what: str) -> ModelFileError:
    return ModelFileError(
        f"--encoder {path}: refused: {what}, which could run code on loading; datadiet loads only programs of "
        "torch operators and plain tensors, as torch.export.save writes them for an ordinary nn.Module"
    )


def not_a_program(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"--encoder {path}: not a torch.export program ({why}); {NOT_A_PROGRAM}")


def read_file(path: Path) -> bytes:
    try:
        if not zipfile.is_zipfile(path):  # before reading what may be a large file of another kind
            raise not_a_program(path, "not a zip archive")
        return path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"--encoder {path}: cannot be read ({error.strerror or error})") from None


def check_program_file(path: Path) -> None:
    """The archive checks of `load_program` alone (cheap: no graph is built), before any image is decoded."""
    check_archive(read_file(path), path)


def load_program(path: Path) -> Program:
    """The program in a .pt2 file, loaded without running code from it (see the module docstring)."""
    data = read_file(path)  # checked and loaded from the same bytes
    check_archive(data, path)
    try:
        with silenced(), sympy_guarded():
            from torch.export.pt2_archive._package import load_pt2

            program = load_pt2(io.BytesIO(data)).exported_programs[MODEL]
            check_source_names(program)  # .module() writes names into Python source that it exec()s
            module = program.module(check_guards=False)  # never exec() the file's guard code
    except UnsafeProgram as error:
        raise refused(path, str(error)) from None
    except Exception as error:  # torch raises many types for a bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"--encoder {path}: not a loadable torch.export program ({reason})") from None
    check_calls(module, path)
    return Program(module, program)


# -- the archive, before torch reads it --------------------------------------------------------------


def check_archive(data: bytes, path: Path) -> None:
    """Refuse anything in a .pt2 archive that torch would unpickle, exec, eval or load as native code."""
    import torch

    try:  # the torch internals these checks mirror (present in the torch versions datadiet is tested with)
        from torch._export.serde.serialize import _dict_to_dataclass  # noqa: F401
        from torch.export.pt2_archive._package import load_pt2  # noqa: F401
    except ImportError:
        raise ModelFileError(
            f"--encoder {path}: torch {torch.__version__} lacks torch.export.pt2_archive, which datadiet needs to load "
            "exported programs safely; upgrade torch"
        ) from None
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise not_a_program(path, "not a zip archive")
    with contextlib.suppress(zipfile.BadZipFile, ValueError), zipfile.ZipFile(io.BytesIO(data)) as archive:
        if any(name.endswith("serialized_exported_program.json") for name in archive.namelist()):
            raise refused(path, "an older torch.export format whose weights are pickles (re-export it with this torch)")
    try:
        with silenced():
            reader = torch._C.PyTorchFileReader(io.BytesIO(data))
            names = set(reader.get_all_records())
    except Exception:
        raise not_a_program(path, "a zip archive that torch cannot read") from None
    if "data.pkl" in names:
        raise ModelFileError(
            f"--encoder {path}: a torch.save file (a pickle), not a torch.export program; export the model with "
            "torch.export.save, or give a state dict as --weights of swav-resnet50 or torchvision:NAME"
        )
    if "archive_format" not in names or reader.get_record("archive_format") != b"pt2":
        raise not_a_program(path, "a zip archive without archive_format 'pt2'")
    check_members(reader, names, path)
    try:
        sample_inputs = reader.get_record(SAMPLE_INPUTS)
        if sample_inputs:  # empty: torch reads no sample inputs at all
            with silenced():
                torch.load(io.BytesIO(sample_inputs), map_location="cpu", weights_only=True)
    except Exception:
        # torch itself would retry with weights_only=False: a pickle that needs it could run code.
        raise refused(path, f"sample inputs ({SAMPLE_INPUTS}) that are not plain tensors") from None
    try:
        document = json.loads(reader.get_record(MODEL_JSON).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise not_a_program(path, f"{MODEL_JSON} is not JSON: {error}") from None
    check_document(document, path)


def check_members(reader: Any, names: set[str], path: Path) -> None:
    """Every member must be one torch.export.save writes for one program of plain tensors."""
    models = sorted(name for name in names if name.startswith("models/"))
    if models != [MODEL_JSON]:
        raise not_a_program(path, f"holds {len(models)} programs ({', '.join(models) or 'none'}), not one")
    aoti = sorted(name for name in names if name.startswith(AOTINDUCTOR_DIR))
    if aoti:
        raise refused(path, f"AOTInductor compiled code ({aoti[0]})")
    expected = {*FIXED_MEMBERS, MODEL_JSON, SAMPLE_INPUTS, WEIGHTS_CONFIG, CONSTANTS_CONFIG}
    missing = sorted(name for name in (MODEL_JSON, SAMPLE_INPUTS, WEIGHTS_CONFIG, CONSTANTS_CONFIG)
                     if name not in names)  # fmt: skip
    if missing:
        raise not_a_program(path, f"no {missing[0]} in the archive")
    for config, folder, what in ((WEIGHTS_CONFIG, "data/weights/", "weight"),
                                 (CONSTANTS_CONFIG, "data/constants/", "constant")):  # fmt: skip
        for name, meta in payloads(reader, config, path).items():
            member = folder + meta.path_name
            kind = next((kind for prefix, kind in CONSTANT_KINDS.items() if meta.path_name.startswith(prefix)), None)
            if kind is not None:
                raise refused(path, f"{what} '{name}' stored as {kind} ({member})")
            if meta.use_pickle:
                raise refused(path, f"{what} '{name}' stored as a pickle ({member})")
            if not PAYLOAD_NAME[what].fullmatch(str(meta.path_name)):  # e.g. data/weights/model.pt, a legacy pickle
                raise refused(path, f"{what} '{name}' stored under an unexpected name ({member})")
            expected.add(member)
    unexpected = sorted(name for name in names - expected if not name.startswith(EXTRA_DIR))
    if unexpected:
        raise refused(path, f"a member torch.export.save does not write ({unexpected[0]})")


def payloads(reader: Any, config: str, path: Path) -> dict[str, Any]:
    """A weights or constants config, parsed by torch's own schema code (as torch.export.load parses it)."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import _dict_to_dataclass

    try:
        parsed = _dict_to_dataclass(schema.PayloadConfig, json.loads(reader.get_record(config).decode("utf-8")))
        return dict(parsed.config)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise not_a_program(path, f"unreadable {config}: {reason}") from None


def entries(document: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every JSON object in a serialized program, and ("", key) for the keys of
    its name -> value maps (`tensor_values`, `sym_int_values`, ...), whose keys become node names."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                if key.endswith("_values") and isinstance(value, dict):
                    yield from (("", name) for name in value)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def is_python_name(value: Any) -> bool:
    return isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)


def is_attribute_path(value: Any) -> bool:
    """Safe inside the `getattr(self, "PART")` torch.fx writes for a part that is not a Python name."""
    return isinstance(value, str) and ATTRIBUTE_PATH.fullmatch(value) is not None


def check_document(document: Any, path: Path) -> None:
    """The strings of model.json that torch hands to sympy's `eval`, or writes into the Python
    source of the module it `exec`s (node and argument names, attribute paths), must be inert."""
    for key, value in entries(document):
        if key == "expr_str" and not (isinstance(value, str) and is_plain_arithmetic(value)):
            raise refused(path, f"a symbolic shape {shorten(value)} that is not plain arithmetic")
        if key in SOURCE_NAME_KEYS and not is_python_name(value):
            raise refused(path, f"a node name {shorten(value)} that is not a Python name")
        if key == "forward_arg_names" and not (isinstance(value, list) and all(map(is_python_name, value))):
            raise refused(path, f"argument names {shorten(value)} that are not Python names")
        if key in ATTRIBUTE_PATH_KEYS and not is_attribute_path(value):
            raise refused(path, f"an attribute path {shorten(value)} with quotes, backslashes or spaces")


@cache
def sympy_names() -> frozenset[str]:
    """Names an expression may call or use: sympy's and torch's expression classes, and sympy's constants."""
    import sympy
    import torch.utils._sympy.functions as functions

    classes = {
        name
        for module in (sympy, functions)
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, sympy.Basic)
    }
    return frozenset(classes | {"oo", "zoo", "nan", "pi", "E", "I", "true", "false"})


def is_plain_arithmetic(text: str) -> bool:
    """Whether `text` is sympy's printed form of an expression: calls of sympy classes on numbers,
    symbol names and operators, and nothing sympy's `eval` could turn into other code."""
    if len(text) > 100_000 or not PRINTABLE.fullmatch(text):
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    names = sympy_names()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            safe = isinstance(node.func, ast.Name) and node.func.id in names
        elif isinstance(node, ast.Name):
            safe = node.id in names or SYMBOL_NAME.fullmatch(node.id) is not None
        elif isinstance(node, ast.Constant):
            value = node.value
            safe = (isinstance(value, str) and PLAIN_STRING.fullmatch(value) is not None) or (
                value is None or isinstance(value, (bool, int, float))
            )
        elif isinstance(node, ast.keyword):
            safe = node.arg is not None and KEYWORD.fullmatch(node.arg) is not None
        else:
            safe = isinstance(node, ARITHMETIC_NODES)
        if not safe:
            return False
    return True


def shorten(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def sympy_guarded() -> Iterator[None]:
    """While torch deserializes: every string sympy would `eval` must be plain arithmetic."""
    from sympy.parsing import sympy_parser

    original = sympy_parser.parse_expr

    def parse_expr(text: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(text, str) or not is_plain_arithmetic(text):
            raise UnsafeProgram(f"a symbolic shape {shorten(text)} that is not plain arithmetic")
        return original(text, *args, **kwargs)

    sympy_parser.parse_expr = parse_expr
    try:
        yield
    finally:
        sympy_parser.parse_expr = original


@contextmanager
def silenced() -> Iterator[None]:
    """No Python warning and no log record reaches stderr (torch logs tracebacks as warnings)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# -- the loaded graph --------------------------------------------------------------------------------


def check_source_names(program: Any) -> None:
    """`ExportedProgram.module()` generates `def forward(self, NAME, ...)` from the file's argument
    names (and keyword names), `self.PATH` for each parameter and buffer, and the node names, and
    exec()s it: each must be a plain Python name (an attribute path without quotes), not code."""
    import torch

    graphs = [module.graph for module in program.graph_module.modules() if isinstance(module, torch.fx.GraphModule)]
    for graph in graphs:
        for node in graph.nodes:
            if not is_python_name(node.name) or (node.op == "placeholder" and not is_python_name(node.target)):
                raise UnsafeProgram(f"a node name {shorten(node.name)} that is not a Python name")
            if node.op == "get_attr" and not is_attribute_path(node.target):
                raise UnsafeProgram(f"an attribute path {shorten(node.target)} with quotes, backslashes or spaces")
    for spec in [*program.graph_signature.input_specs, *program.graph_signature.output_specs]:
        if spec.target is not None and not is_attribute_path(spec.target):
            raise UnsafeProgram(f"an attribute path {shorten(spec.target)} with quotes, backslashes or spaces")
    for entry in program.module_call_graph:
        signature = entry.signature
        if signature is None:
            continue
        names = list(signature.forward_arg_names or [])
        spec = signature.in_spec
        if spec.type is tuple and spec.num_children == 2 and spec.child(1).type is dict:
            names.extend(spec.child(1).context)  # keyword names, written into the source in quotes
        for name in names:
            if not is_python_name(name):
                raise UnsafeProgram(f"an argument name {shorten(name)} that is not a Python name")


@cache
def plain_functions() -> frozenset[Any]:
    """Python callables an exported graph may call besides operators: the export verifier's arithmetic."""
    import torch
    from torch._export.verifier import Verifier

    symbolic = (torch.sym_int, torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min, torch.sym_not,
                torch.sym_sqrt, torch.sym_sum, torch._C._set_grad_enabled)  # fmt: skip
    return frozenset([*Verifier().allowed_builtin_ops(), *symbolic])


def check_calls(module: torch.nn.Module, path: Path) -> None:
    """Every call in every graph of the module is a torch operator or plain arithmetic, and so are
    the callables its calls take as arguments (a graph names its calls by dotted path in the file)."""
    import torch
    from torch._ops import HigherOrderOperator, OpOverload

    def allowed(value: Any) -> bool:
        if isinstance(value, (OpOverload, HigherOrderOperator, torch.fx.Node, torch.nn.Module)):
            return True
        try:
            return not callable(value) or value in plain_functions()
        except TypeError:  # unhashable
            return False

    for graph_module in module.modules():
        if not isinstance(graph_module, torch.fx.GraphModule):
            continue
        for node in graph_module.graph.nodes:
            if node.op not in SAFE_NODE_OPS:
                raise refused(path, f"a graph node that is a {node.op} ({shorten(str(node.target))})")
            leaves: list[Any] = []
            torch.fx.node.map_aggregate((node.args, node.kwargs), leaves.append)
            calls = [node.target] if node.op == "call_function" else []
            for value in [*calls, *leaves]:
                if not allowed(value):
                    name = shorten(getattr(value, "__name__", value))
                    raise refused(path, f"a graph that uses {name}, which is not a torch operator")
