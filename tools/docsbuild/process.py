("nbdev's half of `nbdev-docs` (processing the notebooks into `_proc/`), and what its show_doc output lacks "
 "on this site.")

import ast
import json
import os
import re
from pathlib import Path

from .maths import docstring_maths


def imports_only(cell) -> str | None:
    "For a code cell that mixes imports with other code: its directives and its imports alone, else None."
    if cell.get("cell_type") != "code" or set(getattr(cell, "directives_", {}) or {}) & {
        "export",
        "exports",
        "exporti",
        "exec_doc",
    }:
        return None
    try:
        tree = ast.parse(cell.source)
    except (SyntaxError, ValueError):
        return None
    imports = [t for t in tree.body if isinstance(t, (ast.Import, ast.ImportFrom))]
    if not imports or len(imports) == len(tree.body):
        return None
    keep = [ln for ln in cell.source.splitlines() if ln.startswith("#|")]
    return "\n".join(keep + [ast.get_source_segment(cell.source, t) for t in imports])


def run_imports_only() -> None:
    "nbdev re-runs a notebook's import cells to call show_doc, all of a cell that also holds other code (a test that "
    "starts a subprocess, a table that prints). Run only the imports of such a cell: show_doc needs the names, not the "
    "side effects, and the build stays quiet."
    from nbdev import processors

    if getattr(processors.exec_show_docs.__call__, "_minidl", False):
        return
    orig = processors.exec_show_docs.__call__

    def call(self, cell):
        only = imports_only(cell)
        if only is None:
            return orig(self, cell)
        src, outputs, count = cell.source, cell.get("outputs"), cell.get("execution_count")
        cell.source = only
        cell.pop("_parsed_", None)
        try:
            return orig(self, cell)
        finally:  # the page shows the cell and its stored outputs, not those of the imports just run
            cell.source, cell["outputs"], cell["execution_count"] = src, outputs, count
            cell.pop("_parsed_", None)

    call._minidl = True
    processors.exec_show_docs.__call__ = call


def process_notebooks(c) -> Path:
    "Run nbdev's notebook processing into `_proc/`, from scratch (`nbdev-proc-nbs` would try to install Quarto first)."
    from importlib.metadata import entry_points

    from nbdev.serve import proc_nbs

    if not any(ep.name == c.lib_name for ep in entry_points(group="nbdev")):  # nbdev finds symbols through it
        raise SystemExit(f"build_docs: {c.lib_name} is not installed, so show_doc has no source links: run "
                         "pip install -e '.[dev]'")
    os.chdir(c.config_path)  # nbdev reads its config from the working directory
    for name in ("nbdev.yml", "_quarto.yml"):
        if not (c.nbs_path / name).exists():
            raise SystemExit(f"build_docs: {c.nbs_path / name} is missing (nbdev's site config)")
    run_imports_only()
    try:
        return proc_nbs(str(c.nbs_path), n_workers=0, force=True)  # in this process, so that the patch above applies
    except Exception as e:
        raise SystemExit("build_docs: nbdev could not process a notebook (nbdev-docs would fail the same "
                         f"way):\n{e}") from None


# ---------------------------------------------------------------- show_doc and nbdev's source folds

MATH_DEFS = re.compile(r"^\s*def\s+(?:\w*forward\w*|\w*backward\w*|step)\s*\(", re.M)  # the code of the derivations
SIGNATURE = re.compile(r"\n```python\n.*?\n```\n", re.S)


def _src(x) -> str:
    return "".join(x) if isinstance(x, list) else x


def sources(nb: dict, module: str | None) -> set[str]:
    "nbdev's fold of an `#| exports` cell names the module and is folded, except where the cell holds the maths of the "
    ("page (a `forward`, a `backward`, a `step`). Return the names whose definition stays open (`Linear`, "
     "`Linear.forward`).")
    shown = set()
    for cell in nb["cells"]:
        src = _src(cell.get("source", ""))
        if cell.get("cell_type") != "code" or '#| code-summary: "Exported source"' not in src:
            continue
        src = src.replace('"Exported source"', f'"Source · {module}"' if module else '"Source"')
        if MATH_DEFS.search(src):
            try:
                body = ast.parse("\n".join(ln for ln in src.splitlines() if not ln.startswith("#|"))).body
            except SyntaxError:
                body = []
            for node in body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    shown.add(node.name)
                if isinstance(node, ast.ClassDef):
                    shown |= {f"{node.name}.{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
        else:
            src = src.replace("#| code-fold: show", "#| code-fold: true", 1)
        cell["source"] = src
    return shown


def show_docs(nb: dict, classes: set[str], shown: set[str]) -> None:
    ("show_doc's cards: `class Linear(` for a class (nbdev writes `def`), docstring maths as TeX, and no "
     "signature for a ")
    ("name whose definition is open above (it is read once, in the code; the card keeps its heading, link "
     "and docstring).")
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            md = _src(o.get("data", {}).get("text/markdown", ""))
            head = re.search(r"^#{2,4} ([\w.]+)\s*$", md, re.M)
            if "```python" not in md or not head:
                continue
            if head.group(1) in classes:
                md = re.sub(rf"^def {head.group(1)}\(", f"class {head.group(1)}(", md, count=1, flags=re.M)
            if head.group(1) in shown:
                md = SIGNATURE.sub("\n", md, count=1).replace(
                    head.group(0),
                    head.group(0) + '\n\n<p class="api-defined-above">defined in the source above</p>',
                    1,
                )
            o["data"]["text/markdown"] = docstring_maths(md)


def present(proc: Path, nbs: Path) -> None:
    "Apply the edits above to every processed notebook (never to nbs/)."
    nbs_src = {f.name: json.loads(f.read_text(encoding="utf-8")) for f in nbs.glob("*.ipynb")}
    code = [
        "".join(_src(c.get("source", "")))
        for nb in nbs_src.values()
        for c in nb["cells"]
        if c.get("cell_type") == "code"
    ]
    classes = {name for src in code for name in re.findall(r"^class\s+(\w+)", src, re.M)}
    for f in sorted(proc.glob("*.ipynb")):
        nb = json.loads(f.read_text(encoding="utf-8"))
        exp = [
            re.search(r"^#\|\s*default_exp\s+(\S+)", _src(c.get("source", "")), re.M)
            for c in nbs_src.get(f.name, {}).get("cells", [])
        ]
        module = next((f"minidl/{m.group(1).replace('.', '/')}.py" for m in exp if m), None)
        show_docs(nb, classes, sources(nb, module))
        f.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")
