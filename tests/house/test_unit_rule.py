"""tests/unit/ runs on torch and numpy alone: no file there imports diffusers (or a library built on
it), directly or through a module it imports: a helper in tests/helpers/, another test module, a
script of reference/ or eval/ (on the tests' path, see conftest.py), or a cachekit module.

A static check of import statements: ``import``, ``from ... import`` and ``pytest.importorskip`` /
``importlib.import_module`` with a literal name. In tests, helpers and scripts every import counts,
function bodies included (a test calls them); in cachekit/ only what runs at import time (the
package's lazy imports are on paths that need a pipeline, and tests/house/test_lean_import.py keeps
``import cachekit`` free of diffusers). A test that needs diffusers belongs in another folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PACKAGE = ROOT / "cachekit"

#: top-level packages a unit test may not reach: diffusers and libraries built on it
FORBIDDEN = {"diffusers", "cache_dit"}


def _nodes(tree: ast.AST, lazy: bool):
    """The nodes of ``tree``; without ``lazy``, none inside a function body (run at import only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> list[tuple[Path | None, str]]:
    """(folder a relative import starts from, or None; dotted name) of each module ``path`` imports;
    ``from a import b`` gives ``a`` and ``a.b`` (b may be a module)."""
    lazy = not path.is_relative_to(PACKAGE)
    out = []
    for node in _nodes(ast.parse(path.read_text(), str(path)), lazy):
        if isinstance(node, ast.Import):
            out += [(None, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = path.parents[node.level - 1] if node.level else None
            module = [node.module] if node.module else []
            if module:
                out.append((base, node.module))
            out += [(base, ".".join([*module, a.name])) for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("importorskip", "import_module") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((None, node.args[0].value))
    return out


def _files(name: str, search: list[Path]) -> list[Path]:
    """The files of this repository that importing ``name`` runs (each package's __init__.py on the
    way), from the first folder of ``search`` that has it; [] for another library."""
    parts = name.split(".")
    for base in search:
        files = []
        for i in range(1, len(parts) + 1):
            stem = base.joinpath(*parts[:i])
            if (stem / "__init__.py").is_file():
                files.append(stem / "__init__.py")
            elif stem.with_suffix(".py").is_file():
                files.append(stem.with_suffix(".py"))
                break
            else:
                break
        if files:
            return files
    return []


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def diffusers_chains(path: Path, search: list[Path]) -> list[str]:
    """Each import chain from ``path`` to a forbidden package, as 'a.py -> b.py -> diffusers'; one
    per module that imports one."""
    chains, seen, todo = [], {path}, [(path, [_label(path)])]
    while todo:
        current, chain = todo.pop(0)
        forbidden = set()
        for base, name in _imports(current):
            top = name.split(".")[0]
            if base is None and top in FORBIDDEN:
                forbidden.add(top)
                continue
            for nxt in _files(name, [base] if base else [current.parent, *search]):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append((nxt, [*chain, _label(nxt)]))
        chains += [" -> ".join([*chain, top]) for top in sorted(forbidden)]
    return chains


def _search() -> list[Path]:
    """Where the tests' imports are found: conftest.py's sys.path entries, the repository root
    (cachekit) and the test folders (a test module may import another)."""
    return [TESTS / "helpers", ROOT, ROOT / "reference", ROOT / "eval",
            *sorted(p for p in TESTS.iterdir() if p.is_dir() and p.name not in ("helpers", "data", "__pycache__"))]


def test_no_unit_test_reaches_diffusers():
    files = sorted((TESTS / "unit").rglob("*.py"))
    assert files, "tests/unit/ holds no test"
    bad = [chain for f in files for chain in diffusers_chains(f, _search())]
    assert not bad, "tests/unit/ must run without diffusers; move these tests, or split their helpers:\n" + "\n".join(bad)


def test_the_rule_finds_diffusers_behind_a_helper_or_a_cachekit_module(tmp_path):
    (tmp_path / "helper.py").write_text("def build():\n    from diffusers import DDPMScheduler\n")
    (tmp_path / "test_a.py").write_text("def test_a():\n    from helper import build\n")
    (tmp_path / "test_b.py").write_text("import pytest\n\nhooks = pytest.importorskip('diffusers.hooks')\n")
    (tmp_path / "test_c.py").write_text("from cachekit.reference.digits import build_transformer\n")
    (tmp_path / "test_d.py").write_text("import torch\nfrom cachekit.metrics import psnr\n")
    assert diffusers_chains(tmp_path / "test_a.py", []) == ["test_a.py -> helper.py -> diffusers"]
    assert diffusers_chains(tmp_path / "test_b.py", []) == ["test_b.py -> diffusers"]
    assert "test_c.py -> cachekit/reference/digits.py -> diffusers" in diffusers_chains(tmp_path / "test_c.py", [ROOT])
    assert diffusers_chains(tmp_path / "test_d.py", [ROOT]) == []
