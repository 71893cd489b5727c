"""The house's rules, read from the source: which room may import which. Data
flows one way (kernel discovery -> attach -> decode -> correlate -> diagnosis ->
output); the lab and the bench are never imported by the product, but for the
`lab` command, lazily."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from enum import Enum
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tracer"

# What each room of the product may import of pktfate's own rooms (besides
# errors and the package's version). Top-level modules count as rooms too.
ALLOWED = {
    "config": {"kernel"},
    "kernel": set(),
    "model": set(),
    "host": {"config", "kernel"},
    "decode": set(),
    "correlate": {"decode"},
    "diagnosis": {"correlate", "decode", "host"},
    "paths": {"correlate", "decode", "diagnosis"},
    "output": {"correlate", "decode", "diagnosis", "paths", "probe"},
    "attach": {"config", "decode", "host", "kernel"},
    "session": {"attach", "config", "decode", "host", "kernel"},
    "probe": {"config", "decode", "diagnosis", "host", "output", "session"},
    "watch": {"correlate", "decode", "diagnosis", "host", "output", "paths", "session"},
    "agent": {"attach", "config", "decode", "host", "kernel", "output", "session", "watch"},
    "cli": {"agent", "attach", "config", "kernel", "probe", "session", "watch"},
}
# "" is the package itself (its __version__); model is the typed vocabulary
# every room speaks (it imports nothing of pktfate's).
ALWAYS = {"errors", "", "model"}


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, bool]]:
    """(room imported, at module level?) for each import of pktfate's own."""
    tree = ast.parse(path.read_text())
    module_level = {id(node) for node in tree.body}
    package = list(path.relative_to(root).parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module or "").split(".")] if node.module else base
            elif (node.module or "").startswith(("pktfate", "tracer")):
                target = (node.module or "").split(".")[1:]
            else:
                if (node.module or "").startswith("bench"):
                    found.append(("bench", id(node) in module_level))
                continue
            target = [part for part in target if part]
            if target:
                room = target[0]
            else:  # `from . import X`: X is a room, or a name of the package itself
                name = node.names[0].name
                is_room = (root / name).is_dir() or (root / f"{name}.py").is_file()
                room = name if is_room else ""
            found.append((room, id(node) in module_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(("pktfate.", "tracer.", "bench")):
                    parts = alias.name.split(".")
                    found.append(("bench" if parts[0] == "bench" else parts[1],
                                  id(node) in module_level))
    return found


PRODUCT = sorted(p for p in PACKAGE.rglob("*.py") if _room(p) not in ("lab", "__init__",
                                                                         "__main__", "errors"))


def test_every_room_of_the_product_is_known():
    assert {_room(p) for p in PRODUCT} == set(ALLOWED)


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_rooms(path):
    room = _room(path)
    for target, module_level in _imports(path):
        assert target != "bench", f"{path.name} imports the bench"
        if target == "lab":
            # Only the lab command, and only inside its functions.
            assert path == PACKAGE / "cli" / "lab.py" and not module_level, \
                f"{path.relative_to(PACKAGE)} imports the lab"
            continue
        assert target in ALLOWED[room] | ALWAYS | {room}, \
            f"{path.relative_to(PACKAGE)} ({room}) imports {target}"


def test_the_walk_sees_a_bad_import(tmp_path):
    """The walker is not blind: a module-level import of the lab, relative or
    absolute, is found."""
    fake = tmp_path / "tracer" / "diagnosis" / "rules.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..lab.scenarios import SCENARIOS\nimport pktfate.lab.namespaces\n"
                    "def f():\n    from ..output.human import WIDTH\n")
    assert _imports(fake, tmp_path / "tracer") == [("lab", True), ("lab", True),
                                                   ("output", False)]


# ------------------------------------------------ no display text inside (issue 32)

def _vocabulary() -> frozenset[str]:
    """The JSON contract's names of hooks, fates, checksum verdicts and TCP states,
    and TCP flag letters: compared as text anywhere inside, they would be a model
    kept as strings."""
    from pktfate.model.kinds import CSUM_NAMES, HOOK_NAMES, Fate
    from pktfate.model.protocols import TcpState

    return frozenset([*HOOK_NAMES.values(), *(f.value for f in Fate), *CSUM_NAMES.values(),
                      *TcpState.__members__, "S", "SA", "R", "RA", "A", "F", "FA", "PA"])


# Where text is made or read: the output and the decoder (and the model, which
# declares the names). The lab stands apart from the product.
TEXT_ROOMS = {"output", "decode", "model", "lab"}
LOCATION_PARSERS = {"split", "rsplit", "partition", "rpartition"}


def _strings(node: ast.AST) -> list[str]:
    """The string constants a comparison operand is or holds (a tuple, set, list)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.Set, ast.List)):
        return [s for element in node.elts for s in _strings(element)]
    return []


def text_comparisons(source: str, vocabulary: frozenset[str]) -> list[str]:
    """Each comparison of a value with one of the vocabulary's names, each test of
    a prefix or suffix against them, and each split on '+' (a location's text):
    'line N: what', for a module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = [s for operand in operands for s in _strings(operand) if s in vocabulary]
            if named:
                found.append(f"line {node.lineno}: compares with {named[0]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            args = [s for arg in node.args for s in _strings(arg)]
            if node.func.attr in ("startswith", "endswith") and \
                    any(s in vocabulary or s.startswith(">") for s in args):
                found.append(f"line {node.lineno}: {node.func.attr}({args[0]!r})")
            elif node.func.attr in LOCATION_PARSERS and "+" in args:
                found.append(f"line {node.lineno}: {node.func.attr}('+')")
    return found


@pytest.mark.parametrize("path", [p for p in PRODUCT if _room(p) not in TEXT_ROOMS],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_fate_hook_flag_state_or_location_is_compared_as_text(path):
    assert text_comparisons(path.read_text(), _vocabulary()) == []


def test_the_text_check_sees_what_the_model_replaced():
    """The check is not blind: each way the correlator once read its own display
    strings back is found."""
    old = ('def f(ev, rec, flags):\n'
           '    if rec.fate in ("answered", "rejected", "reset"):\n'
           '        pass\n'
           '    if "S" in flags and ev.hook == "tc-egress":\n'
           '        pass\n'
           '    if ev.state.endswith(">ESTABLISHED"):\n'
           '        return (ev.location or "?").split("+")[0]\n')
    assert len(text_comparisons(old, _vocabulary())) == 5
    assert text_comparisons("if rec.fate is Fate.ANSWERED:\n    pass\n", _vocabulary()) == []


# ------------------------------------------------ records are typed (issue 32)

TYPED_ROOMS = ("model", "decode", "correlate", "diagnosis")
# An untyped field: Any, a bare dict or list, a dict or list of dicts or of Any.
UNTYPED = re.compile(r"\bAny\b|\b(dict|list)\b(?!\[)|\b(dict|list)\[[^\]]*\b(dict|Any)\b")


def _record_fields(module) -> dict[str, str]:
    """'Class.field' -> its annotation, for the dataclasses and NamedTuples a module
    defines (and a plain class's annotated slots)."""
    found = {}
    for name, cls in vars(module).items():
        if not inspect.isclass(cls) or cls.__module__ != module.__name__:
            continue
        if issubclass(cls, Enum):
            continue
        for field_name, annotation in getattr(cls, "__annotations__", {}).items():
            found[f"{name}.{field_name}"] = str(annotation)
    return found


def _typed_modules() -> list[str]:
    return sorted(f"pktfate.{'.'.join(p.relative_to(PACKAGE).with_suffix('').parts)}"
                  for p in PACKAGE.rglob("*.py")
                  if _room(p) in TYPED_ROOMS and p.name != "__init__.py")


@pytest.mark.parametrize("name", _typed_modules())
def test_the_records_passed_between_layers_have_typed_fields(name):
    fields = _record_fields(importlib.import_module(name))
    assert {f: a for f, a in fields.items() if UNTYPED.search(a)} == {}


def test_the_field_check_sees_an_untyped_record():
    for untyped in ("dict", "list[dict]", "Any", "dict[str, Any]", "list", "Mapping[str, Any]"):
        assert UNTYPED.search(untyped), untyped
    for typed in ("dict[str, int]", "Counter[Fate]", "tuple[FlowRef, ...]",
                  "Mapping[str, RouteInfo]", "OrderedDict[tuple[object, ...], bool]"):
        assert not UNTYPED.search(typed), typed
