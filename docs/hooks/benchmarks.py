"""mkdocs hook: one page per ``eval/results/<name>/`` folder, written while the site is built.

Nothing generated is committed: ``mkdocs build`` reads the result folders as they are and adds
``benchmarks/index.md`` plus ``benchmarks/<name>.md`` (and the folder's PNGs) to the site. A page
holds every markdown table of its folder (subfolders included) under the file's path, with the
command that wrote it: the file's own ``Command:`` line (shown in its header), else its JSON twin's
``meta.command``, else the command the measured pages quote for it (``KNOWN``), else a line saying
the file names none. A CSV with no markdown twin is shown as a table; JSON and other files are listed.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from mkdocs.structure.files import File

NAV_TITLE = "Benchmark tables"
OUT = "benchmarks"

#: files that do not name their command, with the one the measured pages quote for them
KNOWN = {
    "scale/scale.md": "python eval/bench_scale.py",
    "scale/scale.csv": "python eval/bench_scale.py",
    "scale/scale_quick.md": "python eval/bench_scale.py --quick",
    "scale/memory.csv": "python eval/bench_scale.py --quick",
    "scale/history.csv": "python eval/bench_scale.py --history",
    "policy_metaworld/summary.md": "python eval/report_policy_metaworld.py eval/results/policy_metaworld",
    "policy_metaworld/all_rows.csv": "python eval/report_policy_metaworld.py eval/results/policy_metaworld",
}
#: hand-written files: what they are instead of a command
NOTES = {
    "policy_metaworld/README_section.md": "Hand-written notes on the tables of this folder; the commands are in the text.",
}

COMMAND = re.compile(r"^Command:\s*`([^`]+)`", re.M)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
MAX_CSV_ROWS = 120   # a larger CSV is listed, not shown: its markdown twin or the measured pages quote it
MAX_TEXT_LINES = 40


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _folders(root: Path) -> list[Path]:
    results = root / "eval" / "results"
    return sorted(p for p in results.iterdir() if p.is_dir()) if results.is_dir() else []


def _files(folder: Path) -> list[Path]:
    """Every file of the folder, its own first, then each subfolder's, by path."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (len(p.relative_to(folder).parts), str(p.relative_to(folder))))


def _demote(text: str, by: int) -> str:
    """Headings of an included file sit under the file's own heading; fences are left alone."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            hashes = len(line) - len(line.lstrip("#"))
            line = "#" * min(6, hashes + by) + line[hashes:]
        out.append(line)
    return "\n".join(out)


def _unlink(text: str) -> str:
    """A result file's relative links point into eval/results, which is not part of the site."""
    def sub(m: re.Match) -> str:
        bang, label, target = m.groups()
        if re.match(r"[a-z]+://", target):
            return m.group(0)
        return f"{label} (`{target}`)" if not bang else f"(image `{target}`)"
    return LINK.sub(sub, text)


def _command(path: Path, rel: str) -> str:
    if rel in NOTES:
        return NOTES[rel]
    if path.suffix == ".md":
        m = COMMAND.search(path.read_text(encoding="utf-8"))
        if m:
            return f"Command: `{m.group(1).strip()}`"
    twin = path.with_suffix(".json")
    if twin.is_file():
        try:
            cmd = json.loads(twin.read_text(encoding="utf-8")).get("meta", {}).get("command")
        except (ValueError, AttributeError):
            cmd = None
        if cmd:
            return f"Command: `{cmd}` (from `{twin.name}`)"
    if rel in KNOWN:
        return f"Command: `{KNOWN[rel]}` (as the measured pages quote it; the file does not say)"
    return "The file does not name the command that wrote it."


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _csv_table(path: Path) -> str | None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows) - 1 > MAX_CSV_ROWS:
        return None
    head, body = rows[0], rows[1:]
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def _page(root: Path, folder: Path) -> tuple[str, list[tuple[str, Path]]]:
    """The page's markdown, and the (site path, source) of each image it shows."""
    name = folder.name
    parts = [f"# {name}",
             "",
             f"Generated from `eval/results/{name}/` when this site is built (`docs/hooks/benchmarks.py`). "
             "Each section is one file of the folder, with the command that wrote it; what the figures "
             "mean is on the [measured pages](../measured/speed.md).",
             ""]
    images, listed = [], []
    files = _files(folder)
    stems_with_md = {p.with_suffix("") for p in files if p.suffix == ".md"}
    for path in files:
        rel_in = path.relative_to(folder).as_posix()
        rel = f"{name}/{rel_in}"
        if path.suffix == ".md":
            text = path.read_text(encoding="utf-8").strip()
            body = _unlink(_demote(text, 2))
            # a file that names its command shows it in its own header; say it only where it does not
            said = [] if COMMAND.search(text) and rel not in NOTES else [_command(path, rel), ""]
            parts += [f"## `{rel_in}`", "", *said, body, ""]
        elif path.suffix == ".csv" and path.with_suffix("") not in stems_with_md:
            table = _csv_table(path)
            if table is None:
                listed.append(f"`{rel_in}`: {_command(path, rel)}")
            else:
                parts += [f"## `{rel_in}`", "", _command(path, rel), "", table, ""]
        elif path.suffix == ".png":
            site_path = f"{OUT}/{name}/{rel_in}"
            images.append((site_path, path))
            parts += [f"## `{rel_in}`", "", f"![{rel_in}]({name}/{rel_in})", ""]
        elif path.suffix == ".txt" and len(path.read_text(encoding="utf-8").splitlines()) <= MAX_TEXT_LINES:
            parts += [f"## `{rel_in}`", "", "```", path.read_text(encoding="utf-8").rstrip(), "```", ""]
        elif path.suffix == ".csv":
            listed.append(f"`{rel_in}`: every row behind `{path.with_suffix('.md').name}` (same command)")
        else:
            what = _command(path, rel) if path.suffix == ".json" else "kept in the repository"
            listed.append(f"`{rel_in}`: {what}")
    if listed:
        parts += ["## Other files", "", *[f"- {line}" for line in listed], ""]
    return "\n".join(parts), images


def _index(root: Path, folders: list[Path]) -> str:
    lines = ["# Benchmark tables", "",
             "One page per folder of `eval/results/`, generated when this site is built: every markdown "
             "table the benchmark scripts wrote, with the command that wrote it. The measured pages say "
             "what the figures mean: [speed](../measured/speed.md), [methods compared](../measured/methods.md), "
             "[diffusion policies](../measured/policies.md), [other libraries](../measured/other_libraries.md).",
             ""]
    if not folders:
        lines.append("No `eval/results/` folder was found when this site was built.")
    for folder in folders:
        mds = [p for p in _files(folder) if p.suffix == ".md"]
        names = ", ".join(f"`{p.relative_to(folder).as_posix()}`" for p in mds)
        lines.append(f"- [{folder.name}]({folder.name}.md)" + (f": {names}" if names else ""))
    return "\n".join(lines) + "\n"


def on_config(config, **kwargs):
    """Add the generated pages to the nav section titled ``NAV_TITLE`` (created if missing)."""
    pages = [{f.name: f"{OUT}/{f.name}.md"} for f in _folders(_root(config))]
    nav = config.get("nav")
    if nav is None:
        return config
    for item in nav:
        if isinstance(item, dict) and NAV_TITLE in item:
            section = item[NAV_TITLE]
            item[NAV_TITLE] = (section if isinstance(section, list) else [section]) + pages
            return config
    nav.append({NAV_TITLE: [f"{OUT}/index.md", *pages]})
    return config


def on_files(files, config, **kwargs):
    root = _root(config)
    folders = _folders(root)
    files.append(File.generated(config, f"{OUT}/index.md", content=_index(root, folders)))
    for folder in folders:
        content, images = _page(root, folder)
        files.append(File.generated(config, f"{OUT}/{folder.name}.md", content=content))
        for site_path, source in images:
            files.append(File.generated(config, site_path, abs_src_path=str(source)))
    return files
