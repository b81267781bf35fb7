"""The book (make book): its table of contents names every chapter, in order, and only files that exist; its staging
copy holds every file the pages link to. Fast: nothing is rendered (CI's `make book` does that)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"


def _stage_module():
    spec = importlib.util.spec_from_file_location("book_stage", BOOK / "stage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stage = _stage_module()


@pytest.fixture(scope="module")
def toc():
    return yaml.safe_load((BOOK / "_toc.yml").read_text(encoding="utf-8"))


def _chapters():
    chapters = (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
    return sorted(p.relative_to(ROOT).with_suffix("").as_posix() for p in chapters)


def test_toc_lists_every_notebook_in_numeric_order(toc):
    docs = [d.removesuffix(".ipynb") for d in stage.toc_docs(toc)]
    listed = [d for d in docs if d.startswith("notebooks/")]
    missing = sorted(set(_chapters()) - set(listed))
    assert not missing, f"book/_toc.yml does not list these notebooks: {missing}"
    assert listed == sorted(listed, key=lambda d: int(re.match(r"notebooks/(\d+)_", d).group(1))), (
        f"book/_toc.yml lists the chapters out of numeric order: {listed}"
    )


def test_toc_names_only_existing_files(toc):
    docs = stage.toc_docs(toc)
    assert docs[0] == "README", "the README is the book's root page"
    absent = [d for d in docs if stage.doc_path(d, ROOT) is None]
    assert not absent, f"book/_toc.yml names files that do not exist (neither .md nor .ipynb): {absent}"
    assert len(docs) == len(set(docs)), f"book/_toc.yml names a page twice: {docs}"


def test_licences_page_follows_the_introduction(toc):
    docs = stage.toc_docs(toc)
    assert docs[1] == "book/licences"


def test_config_never_executes_and_needs_no_network():
    config = yaml.safe_load((BOOK / "_config.yml").read_text(encoding="utf-8"))
    assert config["title"] == "Facial keypoints with convolutional networks"
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    launch = config.get("launch_buttons", {})
    assert not any(launch.get(k) for k in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url", "thebe"))
    sphinx = config.get("sphinx", {}) or {}
    extensions = (sphinx.get("config", {}) or {}).get("extensions", []) + (sphinx.get("extra_extensions") or [])
    assert extensions, "book/_config.yml sets Sphinx's extensions, so that Jupyter Book's network ones are left out"
    for name in ("sphinx.ext.intersphinx", "sphinx_thebe"):  # inventories at build time; live code from a CDN
        assert name not in extensions, f"{name} needs the network"


def test_staging_copy_holds_every_linked_file(tmp_path, toc):
    copied = stage.stage(tmp_path / "src", ROOT)
    assert Path("README.md") in copied and Path("_toc.yml") in copied and Path("_config.yml") in copied
    for doc in stage.toc_docs(toc):
        page = stage.doc_path(doc, tmp_path / "src")
        assert page is not None, f"{doc} was not staged"
        # every relative link of the original page that exists in the repository exists in the staging copy
        original = stage.doc_path(doc, ROOT)
        for target in stage.local_targets(stage.markdown_of(original), original, ROOT):
            assert (tmp_path / "src" / target.relative_to(ROOT)).is_file(), f"{doc} links to {target}, not staged"


def test_readme_relative_links_exist():
    """The README's relative links work on GitHub (and so in the book): each names a file or folder that exists."""
    text = stage.FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8"))
    for target in stage.LINK.findall(text) + stage.HTML_SRC.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = ROOT / target.split("#", 1)[0]
        assert path.exists(), f"README.md links to {target}, which does not exist"


def test_collapsed_cells_are_folded_in_the_book(tmp_path):
    """A solution collapsed in JupyterLab (jupyter.source_hidden) stays folded in the book (MyST-NB's hide-input;
    a worked solution, code and answer both collapsed, folds whole)."""
    notebook = {"cells": [
        {"cell_type": "code", "metadata": {"jupyter": {"source_hidden": True}}, "source": "x = 1", "outputs": []},
        {"cell_type": "code", "metadata": {"jupyter": {"outputs_hidden": True}, "tags": ["parameters"]}, "source": "",
         "outputs": []},
        {"cell_type": "code", "metadata": {}, "source": "y = 2", "outputs": []},
        {"cell_type": "code", "metadata": {"jupyter": {"source_hidden": True, "outputs_hidden": True}}, "source":
         "# Solution 2: the answer\nz = 3", "outputs": []},
        {"cell_type": "markdown", "metadata": {"jupyter": {"source_hidden": True}}, "source": "# text"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    source = tmp_path / "nb.ipynb"
    source.write_text(json.dumps(notebook))
    stage.copy_page(source, tmp_path / "out" / "nb.ipynb")
    cells = json.loads((tmp_path / "out" / "nb.ipynb").read_text())["cells"]
    assert [c["metadata"].get("tags", []) for c in cells] == [["hide-input"], ["parameters", "hide-output"], [],
                                                              ["hide-cell"], []]
    assert cells[3]["metadata"]["mystnb"]["code_prompt_show"] == "Solution 2 (show)"
    assert (tmp_path / "out" / "nb.ipynb").stat().st_mtime_ns == source.stat().st_mtime_ns
    assert json.loads(source.read_text())["cells"][0]["metadata"] == {"jupyter": {"source_hidden": True}}
