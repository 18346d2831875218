"""Build the documentation site `docs/` and `README.md` from the notebooks in `nbs/`, offline and without Quarto.

    python tools/build_docs.py            # rebuild docs/ (+ *.html.md), README.md (+ index_files/), nbs/sidebar.yml
    python tools/build_docs.py --serve    # ... then serve docs/ on http://127.0.0.1:8000

Run it in the project's virtual environment (nbdev, nbconvert, smalldocs and minidl importable), with `npm` on the
PATH the first time (it installs the pinned KaTeX once into a cache; later builds need no network).

`nbdev-docs` is "process the notebooks, then run Quarto"; this keeps nbdev's half and swaps Quarto for smalldocs. The
presentation is in the sources (`#| code-fold` on walls of checks, tables displayed as Markdown, TeX in the prose, the
site's CSS in nbs/styles.css), so `nbdev-docs` renders the same notebooks where Quarto is installed. What remains here
is the glue nbdev and smalldocs lack, one concern per module of `tools/docsbuild/`:

- `sidebar`: nbs/sidebar.yml from the book's parts (`SECTIONS`);
- `process`: nbdev's processing into `_proc/`; show_doc's cards (`class X(`, one signature), nbdev's source folds
  (folded, except the maths of the page: a forward, a backward, a step);
- `maths`: docstrings' plain-text maths as TeX (the code keeps readable docstrings), TeX as text in the search index;
- `render`: smalldocs, with Quarto's `output-file` (`10_linear.ipynb` -> `linear.html`);
- `katex`: the pinned KaTeX copied into the site, no web fonts: nothing loads from another host;
- `html`: code lines with hanging indents, figures in files that enlarge, tables that scroll or stack on a phone,
  anchors that resolve;
- `mdpages`: a notebook as Markdown (nbconvert, Quarto's cell options, absolute doc links); next to each page
  `<page>.html`, its Markdown version `<page>.html.md`, which the `Docs:` line of every module docstring names
  (figures as links to the page's figure files, never inline);
- `readme`: README.md from index.ipynb, with `mdpages`' conversion.
"""

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # minidl, docsbuild

from docsbuild import ROOT, say  # noqa: E402
from docsbuild.html import polish_pages  # noqa: E402
from docsbuild.katex import local_css, vendor_katex  # noqa: E402
from docsbuild.mdpages import write_pages_markdown  # noqa: E402
from docsbuild.process import present, process_notebooks  # noqa: E402
from docsbuild.readme import write_readme  # noqa: E402
from docsbuild.render import render_site  # noqa: E402
from docsbuild.sidebar import write_sidebar  # noqa: E402


def build() -> None:
    "Rebuild `nbs/sidebar.yml`, `docs/`, README.md and `index_files/` from `nbs/`."
    from nbdev.config import get_config

    start, c = time.perf_counter(), get_config(ROOT)
    write_sidebar(c.nbs_path)
    proc = process_notebooks(c)
    say(f"nbdev processed the notebooks into {proc.relative_to(ROOT)} ({time.perf_counter() - start:.1f}s)")
    present(proc, c.nbs_path)
    out = render_site(proc)
    vendor_katex(out)
    local_css(out)
    polish_pages(out, c.doc_url)
    write_pages_markdown(proc, out, c.doc_url)  # after polish_pages: the figure files it links to
    sitemap = out / "sitemap.xml"  # <lastmod> is the processed notebook's file time: different on every checkout
    if sitemap.exists():
        sitemap.write_text(
            re.sub(r"\n *<lastmod>[^<]*</lastmod>", "", sitemap.read_text(encoding="utf-8")), encoding="utf-8"
        )
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve the folder as it is
    shutil.rmtree(c.doc_path, ignore_errors=True)
    shutil.move(str(out), str(c.doc_path))
    write_readme(c, proc)
    say(f"built {c.doc_path.relative_to(ROOT)}/ and README.md in {time.perf_counter() - start:.1f}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help="serve docs/ on 127.0.0.1 after building")
    p.add_argument("--no-build", action="store_true", help="with --serve: serve the docs/ that is there")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    if not a.no_build:
        build()
    if a.serve:  # search loads search.json, which browsers refuse over file://
        subprocess.run([sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(ROOT / "docs"), str(a.port)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
