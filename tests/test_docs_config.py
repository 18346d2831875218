"""The site's configuration agrees with pyproject: the repository links of nbs/_quarto.yml and nbs/nbdev.yml (navbar,
footer, nbdev's `repo-url`) are pyproject's Repository URL. The built site (docs/, tools/build_docs.py) has the
Markdown version `<page>.html.md` of each notebook's page, which the `Docs:` line of every module docstring names."""

import ast
import json
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


DOCS = ROOT / "docs"


def _doc_url() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"][
        "Documentation"
    ].rstrip("/")


def test_every_page_has_its_markdown_version():
    # nbdev names a notebook's page after it, less its number: nbs/10_linear.ipynb -> docs/linear.html
    pages = [
        DOCS / (re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.stem) + ".html")
        for nb in sorted((ROOT / "nbs").glob("*.ipynb"))
    ]
    assert pages, "no notebook in nbs/"
    missing = [p.name for p in pages if not p.is_file() or not p.with_name(p.name + ".md").is_file()]
    assert not missing, f"pages without their Markdown version in docs/ (run tools/build_docs.py): {missing}"
    orphans = [m.name for m in DOCS.glob("*.html.md") if not m.with_suffix("").is_file()]
    assert not orphans, f"Markdown versions of no page in docs/: {orphans}"


def test_module_docs_links_are_in_the_site():
    url, found = _doc_url(), {}
    for f in sorted((ROOT / "minidl").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(f.read_text(encoding="utf-8"))) or ""
        found |= {str(f.relative_to(ROOT)): m for m in re.findall(r"^Docs: (\S+)$", doc, re.M)}
    assert found, "no module docstring with a `Docs:` line"
    dead = {
        f: u
        for f, u in found.items()
        if not u.startswith(url + "/") or not (DOCS / u[len(url) + 1 :]).is_file()
    }
    assert not dead, f"`Docs:` links with no file under docs/: {dead}"


def test_markdown_versions_embed_no_image():
    url, pages = _doc_url(), sorted(DOCS.glob("*.html.md"))
    assert pages, "no docs/*.html.md"
    for md in pages:
        text = md.read_text(encoding="utf-8")
        assert "data:image" not in text, f"{md.name} embeds an image (data:image)"
        assert not re.search(r"[A-Za-z0-9+/]{200,}", text), f"{md.name} holds a base64 payload"
        for fig in re.findall(rf"\]\({re.escape(url)}/(figures/[^)\s]+)\)", text):
            assert (DOCS / fig).is_file(), f"{md.name} links to {fig}, which docs/ lacks"


def test_stored_source_links_point_at_their_definitions():
    """Each `[source](…/minidl/<file>.py#L<n>)` link that `show_doc` stored in a notebook's outputs (and the site
    shows) points at the line where the documented function, class or method is defined in the exported package. A
    notebook that was not run again after its module moved keeps stale line numbers; run it again to fix them."""
    stale, seen = [], 0
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            for out in cell.get("outputs", []):
                md = "".join(out.get("data", {}).get("text/markdown", []))
                heading = re.search(r"^#+ +([\w.]+)", md, re.M)
                for path, line in re.findall(r"blob/main/(minidl/[\w/]+\.py)#L(\d+)", md):
                    seen += 1
                    lines = (ROOT / path).read_text(encoding="utf-8").split("\n")
                    i = int(line) - 1
                    text = lines[i] if i < len(lines) else ""
                    while text.lstrip().startswith("@") and i + 1 < len(lines):  # a decorator: the definition follows
                        i += 1
                        text = lines[i]
                    name = heading.group(1).split(".")[-1] if heading else ""
                    if not re.match(rf"\s*((async\s+)?def\s+{name}\b|class\s+{name}\b)", text):
                        what = heading.group(1) if heading else "?"
                        stale.append(f"{nb.name}: {what} -> {path}:{line} {text.strip()!r}")
    assert seen > 50, f"only {seen} source links found: has show_doc's output format changed?"
    assert not stale, "stale source links (run these notebooks again):\n" + "\n".join(stale)
