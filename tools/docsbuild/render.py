"smalldocs renders `_proc/`, plus the one Quarto behaviour nbdev relies on and smalldocs lacks: `output-file`."

import re
import shutil
from pathlib import Path, PurePosixPath

from . import say
from .maths import search_without_tex

# smalldocs' notes about Quarto options that do not matter for this site (formats and keys only Quarto reads)
QUIET = re.compile(r"output-file is not read|lightbox is ignored|format commonmark is not built|unknown key "
                   r"format-links|keep-md is ignored")


def render_site(proc: Path) -> Path:
    ("Render `_proc/` with smalldocs (`_quarto.yml`, `nbdev.yml`, `sidebar.yml`); return the output folder; "
     "fail on a broken link.")
    from smalldocs.config import load
    from smalldocs.site import Site

    class NbdevSite(Site):
        "A page goes to its front matter's `output-file` (`10_linear.ipynb` -> `linear.html`); links may name either."

        def read(self, src):
            page = super().read(src)
            if page.front.get("output-file"):
                page.out = src.parent / PurePosixPath(str(page.front["output-file"]))
            return page

        def find_page(self, target):
            found = super().find_page(target)
            return found if found is not None else next((p for p in self.pages.values() if p.out == target), None)

    search_without_tex()
    site = NbdevSite(load(proc), quiet=True)
    shutil.rmtree(site.out, ignore_errors=True)
    n = site.build()
    warnings = [w for w in site.warnings if not QUIET.search(w)]
    for w in warnings:
        say(f"smalldocs warning: {w}")
    if any("broken link" in w for w in warnings):
        raise SystemExit("build_docs: broken links, see above")
    say(f"smalldocs wrote {n} pages")
    return site.out
