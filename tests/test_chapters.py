"""What every chapter promises its reader, checked on the notebooks' text (nothing is executed): the thesis format
(objectives, summary, exercises with hidden worked solutions, references) and no trace of the project's own history
in the prose."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# the project's history, as opposed to the method: its runs, sessions, issues, what it committed or published
HISTORY = re.compile(r"\b(committed|publish(?:ed|es|ing)?|sessions?|issues?|"
                     r"(?:next|last|previous|earlier|later|latest|fourth|fifth|our) (?:training )?runs?)\b",
                     re.IGNORECASE)


def _cells(path, kind):
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


def _markdown(path):
    return "\n".join("".join(c["source"]) for c in _cells(path, "markdown"))


def test_there_are_chapters():
    assert len(CHAPTERS) >= 11


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_prose_tells_no_project_history(path):
    found = sorted({m.group(0) for m in HISTORY.finditer(_markdown(path))})
    assert not found, f"{path.name}: the prose mentions {found}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_objectives_summary_exercises_and_references(path):
    text = _markdown(path)
    assert "In this chapter you will" in text, f"{path.name}: no objectives"
    for heading in ("Summary", "Exercises", "References"):
        assert re.search(rf"(?m)^##+ {heading}\b", text), f"{path.name}: no '## {heading}' section"
    exercises = text[re.search(r"(?m)^##+ Exercises\b", text).end():]
    count = len(re.findall(r"(?m)^\d+\. \*\*", exercises))
    assert 3 <= count <= 6, f"{path.name}: {count} exercises (3–6 expected, each '1. **Title**')"
    solutions = [c for c in _cells(path, "code") if "".join(c["source"]).startswith("# Solution")]
    assert solutions, f"{path.name}: no worked solution (a code cell starting '# Solution')"
    for cell in solutions:
        hidden = cell["metadata"].get("jupyter", {})
        assert hidden.get("source_hidden") and hidden.get("outputs_hidden"), \
            f"{path.name}: a solution shows its code or its answer ({''.join(cell['source']).splitlines()[0]})"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_one_tagged_parameters_cell_that_only_assigns(path):
    """Papermill (and the tests) override the cell tagged ``parameters``: each chapter has exactly one, of plain
    assignments, so an injected value is not silently assigned again later in the same cell."""
    tagged = [c for c in _cells(path, "code") if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    body = ast.parse("".join(tagged[0]["source"])).body
    assert body and all(isinstance(s, (ast.Assign, ast.AnnAssign)) for s in body), \
        f"{path.name}: the parameters cell holds more than assignments"
