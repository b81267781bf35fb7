"""Stage the book's sources: a copy of the repository that holds only what the book needs (make book).

    python book/stage.py build/book-src

writes DEST/_config.yml, DEST/_toc.yml and DEST/_static/*.css (from book/), every page _toc.yml names (paths
relative to the repository root, so README.md is the root page and notebooks/NN_*.ipynb the chapters), and every
local file those pages link to or show (figures/*.png, ...), each at its own path. The README therefore keeps its
GitHub links unchanged and they resolve in the book too. Nothing is rewritten but one thing: a notebook cell
collapsed in JupyterLab (metadata jupyter.source_hidden / outputs_hidden, e.g. an exercise's solution) gets
MyST-NB's `hide-input` / `hide-output` / `hide-cell` tag in the copy, so the book folds it too. File times are kept.
A page named in the toc that does not exist is an error; a link to a missing file is left for Sphinx to report.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SUFFIXES = (".md", ".ipynb")
# [text](target "title"), ![alt](target), <img src="target">; the target of a Markdown link may be wrapped in <...>
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
HTML_SRC = re.compile(r"""<(?:img|a|source|video)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def toc_docs(toc: dict) -> list[str]:
    """Every page of a _toc.yml (root first), as written there (without suffix)."""
    docs = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                docs.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk({k: v for k, v in toc.items() if k != "root"})
    return docs


def doc_path(doc: str, root: Path = ROOT) -> Path | None:
    """The source file of a toc entry (`notebooks/01_x` → notebooks/01_x.ipynb), or None."""
    given = root / doc
    if given.suffix in SUFFIXES and given.is_file():
        return given
    for suffix in SUFFIXES:
        if (root / (doc + suffix)).is_file():
            return root / (doc + suffix)
    return None


def markdown_of(path: Path) -> str:
    """The Markdown text of a page: the file itself, or a notebook's markdown cells."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells
            if c["cell_type"] == "markdown"
        )
    return path.read_text(encoding="utf-8")


def local_targets(text: str, page: Path, root: Path = ROOT) -> list[Path]:
    """Files inside the repository that a page links to or shows (relative links only; existing files only)."""
    text = FENCE.sub("", text)
    found = []
    for target in LINK.findall(text) + HTML_SRC.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
            continue  # a URL (http:, mailto:, ...), an anchor on the same page, or an absolute path
        target = target.split("#", 1)[0].split("?", 1)[0]
        if not target:
            continue
        path = (page.parent / target).resolve()
        if path.is_file() and path.is_relative_to(root):
            found.append(path)
    return found


def fold_collapsed_cells(notebook: dict) -> int:
    """Tag the cells JupyterLab shows collapsed so that MyST-NB folds them: source_hidden → hide-input, outputs_hidden
    → hide-output, both → hide-cell, its toggle named after a '# Solution N' first line (in place; returns how many
    cells were tagged)."""
    tagged = 0
    for cell in notebook.get("cells", []):
        hidden = cell.get("metadata", {}).get("jupyter", {})
        wanted = [tag for key, tag in (("source_hidden", "hide-input"), ("outputs_hidden", "hide-output"))
                  if hidden.get(key) and cell.get("cell_type") == "code"]
        if len(wanted) == 2:                 # a worked solution: its code and its answer behind one toggle
            wanted = ["hide-cell"]
            title = "".join(cell.get("source", "")).split("\n", 1)[0]
            if title.startswith("# Solution"):   # the toggle says which one: "Solution 2: ... (show)"
                title = title[2:].split(":", 1)[0]
                cell["metadata"]["mystnb"] = {"code_prompt_show": f"{title} (show)",
                                              "code_prompt_hide": f"{title} (hide)"}
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        new = [tag for tag in wanted if tag not in tags and "hide-cell" not in tags]
        tags.extend(new)
        tagged += bool(new)
    return tagged


def copy_page(source: Path, target: Path) -> None:
    """Copy one file, keeping its times; a notebook with collapsed cells gets them folded (fold_collapsed_cells)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".ipynb":
        notebook = json.loads(source.read_text(encoding="utf-8"))
        if fold_collapsed_cells(notebook):
            target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            stat = source.stat()
            os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            return
    shutil.copy2(source, target)


def stage(dest: Path, root: Path = ROOT) -> list[Path]:
    """Write the staging copy into dest (emptied first); return the files copied, relative to dest."""
    book = root / "book"
    toc = yaml.safe_load((book / "_toc.yml").read_text(encoding="utf-8"))
    pages = []
    for doc in toc_docs(toc):
        path = doc_path(doc, root)
        if path is None:
            raise SystemExit(f"error: book/_toc.yml names {doc!r}, but neither {doc}.md nor {doc}.ipynb exists")
        pages.append(path)
    wanted = {book / "_config.yml": Path("_config.yml"), book / "_toc.yml": Path("_toc.yml")}
    wanted.update({f: f.relative_to(book) for f in sorted((book / "_static").glob("*.css"))})   # the theme's tweaks
    for page in pages:
        wanted[page] = page.relative_to(root)
        for target in local_targets(markdown_of(page), page, root):
            wanted.setdefault(target, target.relative_to(root))
    if dest.exists():
        shutil.rmtree(dest)
    for source, relative in wanted.items():
        copy_page(source, dest / relative)
    return sorted(wanted.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="staging folder (emptied first), e.g. build/book-src")
    args = parser.parse_args(argv)
    dest = args.dest.resolve()
    if dest == ROOT or ROOT.is_relative_to(dest):
        parser.error(f"refusing to empty {dest}: it holds the repository")
    copied = stage(dest)
    print(f"staged {len(copied)} files into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
