"""The README stays the quick path, links in the documentation resolve, and the committed results are portable."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aelab.evaluation import report
from tests.conftest import REPO

RESULTS = REPO / "docs" / "results"
QUICK_PATH = '```bash\npip install -e ".[dev]" && dvc repro\npytest\n```'
# the generated tables and the results files they are made of (--merge for the one-class studies)
TABLES = {
    "mnist.md": (["mnist.json", "mnist-first.json"], False),
    "fashion-mnist.md": (
        ["fashion-mnist.json", "fashion-mnist-oneclass-128-16.json", "fashion-mnist-oneclass-64-8.json"],
        False,
    ),
    **{
        f"{d}-oneclass-{s}.md": (
            [f"{d}-oneclass-{v}-{s}.json" for v in ("undercomplete", "stacked", "conv", "stacked_conv")],
            True,
        )
        for d in ("mnist", "fashion-mnist")
        for s in ("mse", "standardized")
    },
}


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_starts_with_the_two_commands_and_stays_short():
    text = (REPO / "README.md").read_text()
    assert text.split("\n", 2)[2].startswith(QUICK_PATH)
    assert len(text.encode()) <= 12_000


def test_every_relative_link_in_the_documentation_resolves():
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if target.is_dir():
                target = target / "README.md"
            headings = (
                {_anchor(h) for h in re.findall(r"^#+ (.+)$", target.read_text(), re.M)} if target.exists() else set()
            )
            if not target.exists() or (anchor and anchor not in headings):
                broken.append(f"{page.relative_to(REPO)}: {link}")
    assert not broken


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_committed_results_record_no_absolute_paths():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    absolute = [
        f"{path.name}: {text}"
        for path in files
        for text in _strings(json.loads(path.read_text()))
        if re.search(r"(^|[\s=])(/|~/)\w", text)
    ]
    assert not absolute


@pytest.mark.parametrize("table", sorted(TABLES))
def test_generated_result_tables_are_what_report_writes(table):
    names, merge = TABLES[table]
    expected = report.report(RESULTS / "unused.json", [RESULTS / n for n in names], merge=merge)
    assert (RESULTS / table).read_text() == expected, f"regenerate docs/results/{table} (docs/results/README.md)"
