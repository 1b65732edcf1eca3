"""The packages' layering, read from the source with ``ast`` (nothing here imports them): no
import cycle between their modules, each package imports only the packages below it, and the heavy
frameworks (bpy, torch, transformers, diffusers, ray) stay out of module level where they would
load with the data contract; bpy is imported by Blender's own worker process only.

Every import statement counts, at module level and inside functions (a function-level import is
still a dependency; it only runs later). ``if TYPE_CHECKING:`` imports count as dependencies for
the cycle and package rules (the type is still the other package's) but not as module-level
imports for the heavy-framework rule (they never run). Imports of a package's parent (``a.b``
executing ``a/__init__``) are not counted as edges: only the module an import names. Imports by
name at run time (``importlib.import_module``) are not seen; the tree has none.

The checks are functions of the tree's root so that the self-tests at the end can run them on a
scratch copy with a violation added, and show that each one fails when it should."""
from __future__ import annotations

import ast
import functools
import shutil
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("shards", "render", "curate", "pairs", "train", "ray_jobs")

# The first-party imports each package may make (a module, or anything under it); None: anything.
ALLOWED = {
    "shards": ("shards",),
    "render": ("shards", "render"),
    "curate": ("shards", "curate", "render"),
    "train": ("shards", "train", "render.compositing"),  # of render, only the compositing subpackage
    "pairs": ("shards", "pairs", "train", "curate"),
    "ray_jobs": None,
}
# shards is the data contract every training job imports: beside itself, only these outside the standard library.
# fsspec: shards/storage.py, the one filesystem layer (s3://, gs://, file:// and paths), which the writer,
# the reader and the loaders need; pure Python, ~60 ms to import, its back-ends (s3fs, gcsfs) load on use.
SHARDS_THIRD_PARTY = ("numpy", "PIL", "webdataset", "zlib_ng", "fsspec")

# Never imported at module level by these packages (inside functions is fine). bpy's companion
# modules (mathutils, bmesh, bpy_extras) come with bpy and count as bpy.
HEAVY = ("bpy", "mathutils", "bmesh", "bpy_extras", "torch", "transformers", "diffusers", "ray")
LIGHT_PACKAGES = ("shards", "render", "curate", "pairs", "train")

# render/backends/blender_worker.py runs inside Blender's own process (python -m ...), the one
# module that has to use bpy. It needs no module-level exception: it imports bpy in serve() and
# mathutils in BlenderWorker.__init__, so importing the module (for its constants, in tests) does
# not load Blender. What it does need is to be the only importer of bpy at all (any depth): a
# process that imported bpy cannot spawn children, so the client side never may.
BPY = ("bpy", "mathutils", "bmesh", "bpy_extras")
BLENDER_PROCESS_MODULES = ("render.backends.blender_worker",)
BLENDER_WORKER_MODULE_LEVEL_EXCEPTIONS: tuple[str, ...] = ()  # none needed (see above)

# Violations found in the tree and left for a decision, each as (rule, importing file, imported
# module) with a comment saying why. An entry that no longer occurs fails the test: remove it.
KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    file: str          # the importing file, relative to the root
    line: int
    importer: str      # the importing module's dotted name
    target: str        # the imported module's absolute dotted name
    module_level: bool  # runs when the importer is imported (not inside a function)
    type_checking: bool  # under ``if TYPE_CHECKING:``: never runs

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> list[Path]:
    return sorted(p for package in PACKAGES for p in (root / package).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False, type_checking: bool = False):
    """Yield (import statement, inside a function, under ``if TYPE_CHECKING:``) for every import
    statement in ``node``. Class bodies, ``try``/``if`` blocks and the like run at import time:
    only a function body defers an import."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, in_function, type_checking
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _walk(child, in_function, True)
        for child in node.orelse:
            yield from _walk(child, in_function, type_checking)
        return
    in_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, in_function, type_checking)


@functools.lru_cache(maxsize=None)
def _statements(text: str, filename: str) -> tuple:
    """(line, in a function, under TYPE_CHECKING, level, module, names, is a from-import) per import
    statement of a source text (cached by text: the self-tests parse many copies of the same files)."""
    return tuple((node.lineno, in_function, type_checking, getattr(node, "level", 0), getattr(node, "module", None),
                  tuple(alias.name for alias in node.names), isinstance(node, ast.ImportFrom))
                 for node, in_function, type_checking in _walk(ast.parse(text, filename=filename)))


def collect_imports(root: Path) -> list[Import]:
    root = Path(root)
    files = source_files(root)
    modules = {module_name(root, p) for p in files}
    found = []
    for path in files:
        importer = module_name(root, path)
        is_package = path.name == "__init__.py"
        rel = path.relative_to(root).as_posix()
        for line, in_function, type_checking, level, module, names, is_from in _statements(path.read_text(), rel):
            if not is_from:
                targets = list(names)
            else:
                if level:  # relative: from the importer's package, up level - 1 packages
                    package = importer.split(".") if is_package else importer.split(".")[:-1]
                    base = ".".join(package[:len(package) - (level - 1)] + ([module] if module else []))
                else:
                    base = module
                # ``from a import b``: the module a.b when there is one, else a name defined in a
                targets = [f"{base}.{name}" if f"{base}.{name}" in modules else base for name in names]
            for target in dict.fromkeys(targets):
                found.append(Import(rel, line, importer, target, not in_function, type_checking))
    return found


def _first_party(imp: Import) -> bool:
    return imp.top in PACKAGES


# Each rule gives (key, message) pairs; the key (rule, importing file, imported module) is what
# KNOWN_VIOLATIONS lists.

# ---- (a) no import cycle ----------------------------------------------------------------------

def _cycles(root: Path) -> list[tuple[tuple[str, str, str], str]]:
    """One entry per strongly connected set of modules that import each other (at any depth),
    naming a shortest cycle through it with the file and line of each import. Its key is the
    cycle's first import (from the alphabetically first module in the set)."""
    imports = [i for i in collect_imports(root) if _first_party(i)]
    modules = {i.importer for i in imports}
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        known = ("cycle", imp.file, imp.target) in KNOWN_VIOLATIONS  # an import left out of the graph
        if imp.target in modules and imp.target != imp.importer and not known:
            edges[imp.importer].setdefault(imp.target, imp)
    found = []
    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue
        path = _path_back(edges, min(component), component)
        steps = [edges[a][b] for a, b in zip(path, path[1:])]
        found.append((("cycle", steps[0].file, steps[0].target),
                      f"import cycle: {path[0]} -> " + " -> ".join(f"{s.target} ({s.where()})" for s in steps)
                      + f"; all the modules that import each other here: {sorted(component)}"))
    return found


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(sorted(edges[start])))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _path_back(edges: dict[str, dict[str, Import]], start: str, within: set[str]) -> list[str]:
    """A shortest import path from ``start`` back to itself inside one strongly connected set."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(edges[node]):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child in within and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


# ---- (b) the package rule ---------------------------------------------------------------------

def _package_rule(root: Path) -> list[tuple[tuple[str, str, str], str]]:
    found = []
    stdlib = set(sys.stdlib_module_names)
    for imp in collect_imports(root):
        package = imp.importer.split(".")[0]
        allowed = ALLOWED[package]
        if allowed is None:
            continue
        if _first_party(imp):
            ok = any(imp.target == a or imp.target.startswith(a + ".") for a in allowed)
            rule = f"of {', '.join(PACKAGES)}, {package} may import only {' and '.join(allowed)}"
        elif package == "shards":
            ok = imp.top in stdlib or imp.top in SHARDS_THIRD_PARTY
            rule = f"shards may import only the standard library and {', '.join(SHARDS_THIRD_PARTY)}"
        else:
            continue
        if not ok:
            found.append((("package", imp.file, imp.target), f"{imp.where()} imports {imp.target} ({rule})"))
    return found


# ---- (c) heavy frameworks at module level; bpy only in Blender's process ------------------------

def _module_level_heavy(root: Path) -> list[tuple[tuple[str, str, str], str]]:
    found = []
    for imp in collect_imports(root):
        if not imp.module_level or imp.type_checking or imp.top not in HEAVY:
            continue
        package = imp.importer.split(".")[0]
        if package == "ray_jobs" and imp.top == "ray":
            continue  # the one package that imports ray at module level (ray_jobs.ray_runner)
        if imp.importer in BLENDER_PROCESS_MODULES and imp.top in BLENDER_WORKER_MODULE_LEVEL_EXCEPTIONS:
            continue
        if package in LIGHT_PACKAGES or imp.top == "ray":
            found.append((("module-level", imp.file, imp.target),
                          f"{imp.where()} imports {imp.target} at module level ({', '.join(LIGHT_PACKAGES)} import "
                          f"{', '.join(HEAVY)} inside functions only; only ray_jobs imports ray at module level)"))
    return found


def _bpy_outside_the_worker(root: Path) -> list[tuple[tuple[str, str, str], str]]:
    return [(("bpy", imp.file, imp.target),
             f"{imp.where()} imports {imp.target} (only {', '.join(BLENDER_PROCESS_MODULES)} may: "
             "it runs in Blender's own process, and a process that imported bpy cannot spawn children)")
            for imp in collect_imports(root) if imp.top in BPY and imp.importer not in BLENDER_PROCESS_MODULES]


RULES = {"cycle": _cycles, "package": _package_rule, "module-level": _module_level_heavy,
         "bpy": _bpy_outside_the_worker}


def violations(rule: str, root: Path) -> list[str]:
    """The rule's violations in the tree at ``root``, less KNOWN_VIOLATIONS."""
    return [message for key, message in RULES[rule](root) if key not in KNOWN_VIOLATIONS]


def stale_known_violations(root: Path) -> list[tuple[str, str, str]]:
    """KNOWN_VIOLATIONS entries that no longer occur (a cycle's entry: its import is gone)."""
    imports = {(i.file, i.target) for i in collect_imports(root)}
    found = {key for rule, check in RULES.items() if rule != "cycle" for key, _ in check(root)}
    return sorted(key for key in KNOWN_VIOLATIONS
                  if (key[1:] not in imports if key[0] == "cycle" else key not in found))


# ---- the tests --------------------------------------------------------------------------------

def test_the_parser_sees_every_package():
    files = source_files(ROOT)
    assert {module_name(ROOT, p).split(".")[0] for p in files} == set(PACKAGES)
    assert len([i for i in collect_imports(ROOT) if _first_party(i)]) > 100


@pytest.mark.parametrize("rule", ["cycle", "package", "module-level", "bpy"], ids=[
    "no import cycle", "each package imports only the packages below it", "no heavy framework at module level",
    "only the blender worker imports bpy"])
def test_the_tree_keeps_the_rule(rule):
    found = violations(rule, ROOT)
    assert not found, "\n".join(found)


def test_known_violations_still_occur():
    stale = stale_known_violations(ROOT)
    assert not stale, f"KNOWN_VIOLATIONS entries no longer found (remove them): {stale}"


# ---- each check fails when it should: the same checks on a scratch copy with a violation added -

def _scratch_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path


def _append(root: Path, file: str, code: str) -> int:
    """Add ``code`` at the end of ``file``; returns the line it starts on."""
    path = root / file
    text = path.read_text()
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + code)
    return text.count("\n") + 1


@pytest.mark.parametrize("file, code, expected", [
    # a direct cycle, at module level
    ("shards/keys.py", "import shards.writer\n", ["shards.keys", "shards.writer"]),
    # a longer one, through a function-level import
    ("shards/schema.py", "def f():\n    from render.stage import RenderStage\n", ["render.stage", "shards.schema"]),
    # a relative import
    ("render/compositing/composite.py", "from ..compositing import stage\n",
     ["render.compositing.composite", "render.compositing.stage"]),
])
def test_a_cycle_is_found_and_named(tmp_path, file, code, expected):
    root = _scratch_copy(tmp_path)
    assert violations("cycle", root) == []
    line = _append(root, file, code)
    cycles = violations("cycle", root)
    assert len(cycles) == 1 and all(m in cycles[0] for m in expected), cycles
    assert f"{file}:{line + (code.count(chr(10)) - 1)}" in cycles[0], cycles


@pytest.mark.parametrize("file, code, target", [
    ("shards/writer.py", "def f():\n    from render.spec import SceneSpec\n", "render.spec"),
    ("shards/keys.py", "import yaml\n", "yaml"),
    ("render/geometry.py", "from ray_jobs.config import load_config\n", "ray_jobs.config"),
    ("render/qa.py", "from curate import x\n", "curate"),
    ("train/compositing.py", "from render.spec import SceneSpec\n", "render.spec"),
    ("train/compositing.py", "from render import geometry\n", "render.geometry"),
    ("curate/__init__.py", "import train\n", "train"),
    ("pairs/__init__.py", "from render.compositing import composite\n", "render.compositing.composite"),
    ("pairs/__init__.py", "from ray_jobs import cli\n", "ray_jobs.cli"),
])
def test_a_package_rule_violation_names_file_line_and_module(tmp_path, file, code, target):
    root = _scratch_copy(tmp_path)
    assert violations("package", root) == []
    line = _append(root, file, code) + code.count("\n") - 1
    found = violations("package", root)
    assert len(found) == 1 and found[0].startswith(f"{file}:{line} imports {target} "), found


@pytest.mark.parametrize("file, code", [
    ("train/compositing.py", "from render.compositing.backgrounds import ProceduralBackgrounds\n"),
    ("train/compositing.py", "from render import compositing\n"),
    ("curate/__init__.py", "from render.spec import SceneSpec\nfrom shards import keys\n"),
    ("pairs/__init__.py", "import train.compositing\nfrom curate import x\n"),
    ("ray_jobs/plan.py", "from pairs import x\nimport torch\n"),
    ("shards/keys.py", "import numpy, PIL.Image, webdataset, zlib\n"),
])
def test_what_the_package_rule_allows_passes(tmp_path, file, code):
    root = _scratch_copy(tmp_path)
    _append(root, file, code)
    assert violations("package", root) == []


@pytest.mark.parametrize("file, code, target", [
    ("render/stage.py", "import torch\n", "torch"),
    ("train/compositing.py", "from diffusers import UNet2DModel\n", "diffusers"),
    ("curate/__init__.py", "try:\n    import transformers\nexcept ImportError:\n    transformers = None\n",
     "transformers"),
    ("shards/reader.py", "class C:\n    import ray\n", "ray"),  # a class body runs at import
    ("render/backends/blender_worker.py", "import bpy\n", "bpy"),
    ("render/stage.py", "if True:\n    import ray.data\n", "ray.data"),
])
def test_a_heavy_import_at_module_level_is_found(tmp_path, file, code, target):
    root = _scratch_copy(tmp_path)
    assert violations("module-level", root) == []
    _append(root, file, code)
    found = violations("module-level", root)
    assert len(found) == 1 and f"{file}:" in found[0] and f" imports {target} " in found[0], found


@pytest.mark.parametrize("file, code", [
    ("render/stage.py", "def f():\n    import torch\n"),
    ("render/stage.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"),
    ("ray_jobs/local.py", "import ray\n"),
    ("ray_jobs/local.py", "import torch\n"),
])
def test_heavy_imports_inside_functions_or_in_ray_jobs_pass(tmp_path, file, code):
    root = _scratch_copy(tmp_path)
    _append(root, file, code)
    assert violations("module-level", root) == []


def test_bpy_outside_the_worker_is_found(tmp_path):
    root = _scratch_copy(tmp_path)
    assert violations("bpy", root) == []
    line = _append(root, "render/backends/blender_backend.py", "def version():\n    import bpy\n") + 1
    assert violations("bpy", root) == [
        f"render/backends/blender_backend.py:{line} imports bpy (only render.backends.blender_worker may: "
        "it runs in Blender's own process, and a process that imported bpy cannot spawn children)"]


def test_known_violations_are_left_out_and_stale_ones_named(tmp_path, monkeypatch):
    root = _scratch_copy(tmp_path)
    _append(root, "train/compositing.py", "from ray_jobs import status\n")  # status reaches no train module: no cycle
    _append(root, "shards/keys.py", "import shards.writer\n")
    assert violations("package", root) and violations("cycle", root)
    monkeypatch.setitem(globals(), "KNOWN_VIOLATIONS", {("package", "train/compositing.py", "ray_jobs.status"),
                                                        ("cycle", "shards/keys.py", "shards.writer"),
                                                        ("package", "render/qa.py", "curate")})
    assert violations("package", root) == [] and violations("cycle", root) == []
    assert stale_known_violations(root) == [("package", "render/qa.py", "curate")]
