"""Every test a README cites as the one that holds a promise exists (renamed tests leave no stale names)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import ROOT

# the project's own: not those of hidden folders (.venv, .git, the caches pytest and ruff write)
READMES = sorted(
    p
    for p in ROOT.glob("**/README.md")
    if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
)
DEFINED = {
    m
    for p in (ROOT / "tests").rglob("test_*.py")
    for m in re.findall(r"^def (test_\w+)", p.read_text(), re.M)
}


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_tests_a_readme_names_exist(readme: object) -> None:
    cited = set(re.findall(r"\b(test_\w+)\b", readme.read_text()))
    cited -= {name for name in cited if name.endswith("_")}  # prefixes such as test_resume_*
    files = {p.stem for p in (ROOT / "tests").rglob("test_*.py")}
    assert sorted(cited - DEFINED - files) == []
