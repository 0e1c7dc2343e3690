"""The README stays a user README, and the documentation site builds strictly.

(a) README.md has at most 200 lines, holds the two set-up commands verbatim, and no other fenced
    shell command installs anything; (b) ``mkdocs build --strict`` succeeds (warnings are errors),
    writes one benchmark page per ``eval/results/`` folder and documents every name of
    ``cachekit.__all__``; (c) every relative link of README.md and docs/ points at a file that
    exists (or at a page the build generates).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "eval" / "results"

#: the set-up section's two commands, exactly as a fresh machine runs them (.ci/run runs the second)
SETUP_MAIN = 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[diffusers,bench]" && cachekit demo'
SETUP_TESTS = 'pip install torch==2.13.0 && pip install -c constraints.txt -e ".[dev]" && python -m pytest tests'
MAX_README_LINES = 200

FENCE = re.compile(r"^```([\w+-]*)\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SHELLS = {"bash", "sh", "shell", "console", "zsh"}


def _fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every fenced block."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        m = FENCE.match(line.strip())
        if lang is None and m:
            lang, lines = m.group(1).lower(), []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def _prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where links live."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()) or (fenced and line.strip() == "```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


# ---- (a) the README --------------------------------------------------------------------------

def test_readme_is_at_most_200_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail to docs/ (limit {MAX_README_LINES})"


def test_readme_holds_both_setup_commands_verbatim_and_no_other_install_command():
    text = README.read_text(encoding="utf-8")
    commands = [line.strip() for lang, lines in _fenced_blocks(text) if lang in SHELLS or lang == ""
                for line in lines if line.strip()]
    assert SETUP_MAIN in commands, "README.md lost the main job's set-up command"
    assert SETUP_TESTS in commands, "README.md lost the tests' set-up command"
    installs = [c for c in commands if "pip install" in c or "pip3 install" in c]
    assert sorted(installs) == sorted([SETUP_MAIN, SETUP_TESTS]), (
        f"README.md: the only fenced install commands are the two set-up commands, found {installs}")


# ---- (b) the site builds strictly --------------------------------------------------------------

def _exported_names() -> list[str]:
    """``cachekit.__all__``, read without importing cachekit (and torch)."""
    tree = ast.parse((ROOT / "cachekit" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("cachekit/__init__.py defines no __all__")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -c constraints.txt -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}   # mkdocs-material's banner, not a build warning
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                    if line.startswith(("WARNING", "ERROR", "Aborted", "Traceback", "  File", "    ")))
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log or proc.stderr[-4000:]}"
    return out


def test_mkdocs_build_strict_succeeds(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "index.html").is_file()


def test_benchmark_pages_are_generated_from_every_results_folder(site):
    assert not (DOCS / "benchmarks").exists(), "benchmark pages are generated at build time, never committed"
    folders = sorted(p for p in RESULTS.iterdir() if p.is_dir())
    assert folders, "eval/results/ has no folders"
    for folder in folders:
        page = site / "benchmarks" / folder.name / "index.html"
        assert page.is_file(), f"no generated page for eval/results/{folder.name}"
        html = page.read_text(encoding="utf-8")
        for md in folder.rglob("*.md"):
            rel = md.relative_to(folder).as_posix()
            assert rel in html, f"benchmarks/{folder.name}: {rel} is missing"
            command = re.search(r"^Command:\s*`([^`]+)`", md.read_text(encoding="utf-8"), re.M)
            if command:   # shown as written (the page escapes HTML, so compare a plain word run)
                first = command.group(1).split()[:3]
                assert " ".join(first) in html, f"benchmarks/{folder.name}: {rel}'s command is missing"


def test_api_page_documents_every_export(site):
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    missing = [n for n in _exported_names() if f'id="cachekit.{n}"' not in html]
    assert not missing, f"docs/api.md renders no entry for cachekit.{', cachekit.'.join(missing)}"


# ---- (c) relative links ------------------------------------------------------------------------

def _generated(target: Path) -> bool:
    """A page the build writes: docs/benchmarks/index.md and docs/benchmarks/<results folder>.md."""
    try:
        rel = target.relative_to(DOCS / "benchmarks")
    except ValueError:
        return False
    name = rel.with_suffix("").as_posix()
    return rel.suffix == ".md" and (name == "index" or (RESULTS / name).is_dir())


@pytest.mark.parametrize("path", [README, *_pages()], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files_that_exist(path):
    broken = []
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue   # a URL or an anchor on the same page (mkdocs checks anchors: validation.anchors)
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not (resolved.exists() or _generated(resolved)):
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"
