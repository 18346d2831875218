("README.md (and its figures in `index_files/`) from the processed `index.ipynb`, as `nbdev-readme` would "
 "without Quarto.")

import shutil
from pathlib import Path

from . import ROOT, say
from .mdpages import notebook_markdown


def write_readme(c, proc: Path) -> None:
    "The notebook's Markdown (`mdpages.notebook_markdown`), with nbconvert's figure files in `<stem>_files/`."
    src = proc / c.readme_nb
    if not src.exists():
        say(f"no {c.readme_nb}: README.md left as it is")
        return
    _, head, body, files = notebook_markdown(src, c.doc_url, c.lib_name)
    note = f"<!-- Generated from nbs/{c.readme_nb} by tools/build_docs.py; edit the notebook, not this file -->\n\n"
    shutil.rmtree(ROOT / f"{src.stem}_files", ignore_errors=True)
    for name, data in sorted(files.items()):
        (ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / name).write_bytes(data)
    (ROOT / "README.md").write_text(head + note + body, encoding="utf-8")
