"""The site's configuration agrees with pyproject: the repository links of nbs/_quarto.yml and nbs/nbdev.yml (navbar,
footer, nbdev's `repo-url`) are pyproject's Repository URL."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_repository_links_are_pyprojects():
    url = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"][
        "Repository"
    ].rstrip("/")
    found = [
        u
        for f in ("_quarto.yml", "nbdev.yml")
        for u in re.findall(
            r"https://github\.com/[\w.-]+/[\w.-]+", (ROOT / "nbs" / f).read_text(encoding="utf-8")
        )
    ]
    assert found, "no repository link in nbs/_quarto.yml or nbs/nbdev.yml"
    assert {u.rstrip("/") for u in found} == {url}, (
        f"repository links {sorted(set(found))} differ from pyproject's {url}"
    )
