"""Build the documentation site `docs/` and `README.md` from the notebooks in `nbs/`, offline and without Quarto.

    python tools/build_docs.py            # rebuild docs/, README.md (+ index_files/) and nbs/sidebar.yml
    python tools/build_docs.py --serve    # ... then serve docs/ on http://127.0.0.1:8000

Run it from anywhere, in the project's virtual environment (nbdev, nbconvert, smalldocs and minidl importable) with
`npm` on the PATH the first time (it installs the pinned KaTeX once into a cache; later builds need no network).

What `nbdev-docs` does is "process the notebooks, then run Quarto". Quarto cannot be installed here, so this script
keeps nbdev's half and swaps Quarto for smalldocs. The glue, all of it in this file:

1. `nbs/sidebar.yml`: the sidebar in notebook order, grouped into the sections of `SECTIONS` below. With
   `custom_sidebar = true` in pyproject's [tool.nbdev], `nbdev-docs` (where Quarto exists) uses the same file.
2. `nbdev.serve.proc_nbs`: nbdev's own processing into `_proc/` (runs `show_doc`, drops `#| hide` and export-only
   cells, turns `# Title` / `> summary` into front matter with `output-file: linear.html`). We call the function
   because the `nbdev-proc-nbs` command tries to install Quarto first.
3. smalldocs renders `_proc/` with `_quarto.yml`, `nbdev.yml` and `sidebar.yml`; `NbdevSite` adds the one Quarto
   behaviour nbdev relies on and smalldocs lacks: a page is written to its `output-file` (`10_linear.ipynb` ->
   `linear.html`); links and sidebar entries may name either.
4. Offline and deterministic: KaTeX comes from the npm package pinned in `tools/katex/` (installed with `npm ci`
   into a cache outside the repo) and is copied into `docs/site_libs/katex`; the pages point there instead of the
   CDN; the theme's web-font `@import` goes (the fonts fall back to the system's). `<lastmod>` (file times) leaves
   `sitemap.xml`. Links to the hosted docs become relative links. The build fails if a page or a stylesheet still
   loads anything from another host.
5. `README.md` from the processed `index.ipynb` with nbconvert's Markdown exporter (nbdev-readme needs Quarto),
   its figures in `index_files/`, its relative doc links made absolute as nbdev's readme filter does.

And the presentation, generic (no notebook option needed, so pages added later look the same):
- on the processed notebooks (`present`): runs of cells that only check (test_eq, test_fail, test_close, assert,
  torch.testing...; three checks or more, no output, no gradcheck) become one collapsed block saying how many checks
  it holds; printed fixed-width tables (the circle results) become tables; show_doc writes `class Linear(` for a class
  and renders its docstring's ASCII maths (`dL/dW = G^T X`) as TeX; nbdev's fold of an `#| exports` cell names the
  module (`Source · minidl/nn/linear.py`) and is folded, except where the cell holds the maths of the page (a `forward`,
  a `backward`, a `step`): that code stays open, and the API cards of what it defines drop their signature, which the
  reader has just read in the code; an import cell that also runs code has only its imports re-run by nbdev, so
  the build is quiet and runs no test twice;
- on the pages (`polish_pages`): each code line is wrapped for a hanging indent (styles.css; lines break at spaces and
  after opening brackets, never inside a name), figures move to `docs/figures/` and link to themselves (tools/site.js
  shows them enlarged), every table sits in a box that scrolls sideways when it must (site.js adds a visible cue to
  any box that does: tables, display maths, code), tables of five columns or more become cards on a phone, nbdev's links to anchors that do not exist (a private `_ones`) become plain code and any other
  broken anchor fails the build; the search index holds maths as text (∂L/∂W), not TeX.

Nothing of this lives in the notebooks, so `nbdev-docs` still works on the same sources where Quarto is installed.
"""

import argparse
import ast
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the notebooks import minidl from this checkout (nbdev's workers inherit sys.path)
KATEX_PIN = ROOT / "tools" / "katex"  # package.json + package-lock.json: the KaTeX version the site ships
KATEX_CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/katex@[^/\"']+/dist/")
# The sidebar's sections: the book's parts, in this order (also the order of the previous/next links). A notebook goes
# to the first section whose pattern matches its file name, else to DEFAULT_SECTION, and keeps
# notebook order inside it; index.ipynb is the home page, above the sections. A section holding a single page of the
# same title (Performance) becomes that page's plain entry, not "Performance > Performance"; a section titled None
# lists its pages at the top level.
SECTIONS = [
    ("Start here", r"^90[a-z]?_"),  # backpropagation from scratch: the way in, before Part I
    ("Part I · Foundations", r"^0\d[a-z]?_"),  # Parameter/Module, gradcheck, the testing policy, files, the checks
    ("Part II · Layers — minidl.nn", r"^[12]\d[a-z]?_"),  # one notebook per module of minidl.nn, and the nn namespace (29)
    ("Part III · Optimisation and training", r"^3\d[a-z]?_"),  # optimizers, schedules, optim namespace, train, checkpoints, plots, diagnostics
    ("Part IV · Experiments", r"^[45]\d[a-z]?_"),  # what the experiments share (40), the circle (41-45), the digits (50-52), python -m minidl (59)
    ("Part V · Scale", r"^[6-8]\d[a-z]?_"),  # data parallelism, GPU
    ("Tutorials", r"^9[1-7][a-z]?_|tutorial"),  # data parallelism by hand, ... (a pattern earlier in the list wins)
    ("Performance", r"^98[a-z]?_|perf|bench"),
    (None, r"^99[a-z]?_"),  # the minidl namespace: every module and its names
]
DEFAULT_SECTION = "Part I · Foundations"
# smalldocs warnings about Quarto options that do not matter for this site (formats and keys only Quarto reads)
QUIET = re.compile(r"output-file is not read|lightbox is ignored|format commonmark is not built|unknown key format-links|keep-md is ignored")


def say(msg):
    print(f"build_docs: {msg}", file=sys.stderr, flush=True)


def cfg():
    from nbdev.config import get_config

    return get_config(ROOT)


# ---------------------------------------------------------------- 1. the sidebar


def notebooks(nbs: Path) -> list[str]:
    "The notebooks that become pages, in nbdev's order (names starting with `_` or `.` are scratch)."
    return sorted(p.name for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))


def nb_title(nb: Path) -> str:
    "A notebook's `# Title` (its first markdown cell's first heading), or its file name."
    for cell in json.loads(nb.read_text(encoding="utf-8")).get("cells", []):
        if cell.get("cell_type") == "markdown":
            m = re.search(r"^#\s+(.+?)\s*$", "".join(cell.get("source", "")), re.M)
            return m.group(1) if m else nb.stem
    return nb.stem


def section_of(name: str) -> str | None:
    "The sidebar section (a book part) of a notebook file name."
    hits = [t for t, pat in SECTIONS if re.search(pat, name)]
    return hits[0] if hits else DEFAULT_SECTION


def write_sidebar(nbs: Path) -> None:
    "Write `nbs/sidebar.yml`: home page first, then one section per entry of `SECTIONS` that has notebooks."
    names = [n for n in notebooks(nbs) if n != "index.ipynb"]
    groups: dict = {title: [] for title, _ in SECTIONS}
    for n in names:
        groups.setdefault(section_of(n), []).append(n)
    contents: list = ["index.ipynb"] if (nbs / "index.ipynb").exists() else []
    for t, g in groups.items():
        if not g:
            continue
        if t is None or (len(g) == 1 and nb_title(nbs / g[0]).strip().lower() == t.lower()):
            contents += g
        else:
            contents.append({"section": t, "contents": g})
    text = "# Generated by tools/build_docs.py from the notebooks in nbs/ (see SECTIONS there); do not edit.\n"
    text += yaml.safe_dump({"website": {"sidebar": {"contents": contents}}}, sort_keys=False, allow_unicode=True)
    if not (nbs / "sidebar.yml").exists() or (nbs / "sidebar.yml").read_text(encoding="utf-8") != text:
        (nbs / "sidebar.yml").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- 2. nbdev's processing


def imports_only(cell) -> str | None:
    "For a code cell that mixes imports with other code: its directives and its imports alone, else None."
    if cell.get("cell_type") != "code" or set(getattr(cell, "directives_", {}) or {}) & {"export", "exports", "exporti", "exec_doc"}:
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
    "nbdev re-runs a notebook's import cells to call show_doc, and warns when an import cell also holds other code (then "
    "it runs all of it: a test that starts a subprocess, a table that prints). Run only the imports of such a cell: "
    "show_doc needs the names, not the side effects, and the build stays quiet. (The source of the warning is a notebook "
    "cell mixing both; nbdev's FAQ moves the imports to the imports cell.) The forked workers inherit the patch."
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
    "Run nbdev's notebook processing (the step `nbdev-docs` runs before Quarto) into `_proc/`, from scratch."
    from importlib.metadata import entry_points

    from nbdev.serve import proc_nbs

    if not any(ep.name == c.lib_name for ep in entry_points(group="nbdev")):  # nbdev finds symbols through it
        raise SystemExit(f"build_docs: {c.lib_name} is not installed, so show_doc has no source links and `names` no doc "
                         "links: run pip install -e '.[dev]' first")
    os.chdir(c.config_path)  # nbdev reads its config from the working directory, in the workers too
    for name in ("nbdev.yml", "_quarto.yml"):
        if not (c.nbs_path / name).exists():
            raise SystemExit(f"build_docs: {c.nbs_path / name} is missing (nbdev's site config)")
    run_imports_only()
    try:
        return proc_nbs(str(c.nbs_path), n_workers=0, force=True)  # in this process: nbdev spawns its workers, which would not see run_imports_only
    except Exception as e:  # nbdev runs each notebook's imports, definitions and show_doc cells; one failed
        raise SystemExit(f"build_docs: nbdev could not process a notebook (nbdev-docs would fail the same way):\n{e}\n"
                         "(nbdev re-runs only the cells that export, import or call show_doc; a cell that mixes an import "
                         "with code needing earlier results fails: move the import to the notebook's imports cell)") from None


# ---------------------------------------------------------------- 2b. presentation, on the processed notebooks
# Generic edits of `_proc/` (never of nbs/): they apply to every page, present and future, with no notebook option.

CHECK_CALLS = {"test_eq", "test_ne", "test_close", "test_fail", "test_is", "test_eq_type", "test_stdout", "test_warns",
               "test_shuffled", "test_sig", "test_fig_exists", "expect_fail", "assert_close", "assert_allclose", "assert_equal"}
CHECK_TAGS = {"test_eq", "test_close", "test_fail", "assert", "torch.testing"}  # named in a folded block's summary


def _call_name(node) -> str:
    "`test_eq` for `test_eq(...)`, `torch.testing.assert_close` for that call, '' for anything else."
    f = node.func if isinstance(node, ast.Call) else None
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def count_checks(stmts) -> int | None:
    "How many checks a list of statements holds when it holds only checks (calls of CHECK_CALLS, `assert`, loops and "
    "`with` blocks of them), else None."
    n = 0
    for st in stmts:
        if isinstance(st, ast.Assert):
            n += 1
        elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and _call_name(st.value).split(".")[-1] in CHECK_CALLS:
            n += 1
        elif isinstance(st, (ast.For, ast.With)) and not getattr(st, "orelse", None):
            inner = count_checks(st.body)
            if inner is None:
                return None
            n += inner
        else:
            return None
    return n or None


def check_cell(cell: dict) -> int | None:
    "The number of checks of a visible code cell that only checks, prints nothing and teaches nothing (no gradcheck), else None."
    from smalldocs.notebook import cell_options

    if cell.get("cell_type") != "code" or cell.get("outputs"):
        return None
    opts, code = cell_options(_src(cell))
    if not code.strip() or opts.get("echo") is False or opts.get("include") is False or opts.get("code-fold") is not None:
        return None
    if "gradcheck" in code:  # the tests that teach stay in the flow (STYLE.md)
        return None
    try:
        return count_checks(ast.parse(code).body)
    except SyntaxError:
        return None


def _src(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def fold_checks(nb: dict, min_checks: int = 3) -> int:
    "Fold each run of consecutive check-only cells holding at least `min_checks` checks into a collapsed block whose "
    "summary says how many checks it holds (open when the prose just above announces it with a colon); return how "
    "many blocks."
    cells, out, folds, i = nb["cells"], [], 0, 0
    while i < len(cells):
        j, n, tags = i, 0, set()
        while j < len(cells) and (k := check_cell(cells[j])) is not None:
            n += k
            code = _src(cells[j])
            tags |= {t for t in CHECK_TAGS if re.search(rf"(^|\W){re.escape(t)}\b", code)}
            j += 1
        if j > i and n >= min_checks:
            what = ", ".join(sorted(tags))
            # prose ending with a colon announces the checks below ("... with a message that names what was
            # expected:"): they are the point of the paragraph, so their block starts open
            prev = _src(out[-1]).rstrip() if out and out[-1].get("cell_type") == "markdown" else ""
            opened = ' open data-introduced=""' if prev.endswith(":") else ""
            out.append(_md(f'<details class="checks"{opened}>\n<summary><span class="checks-count">{n} checks</span> '
                           f'<span class="checks-what">{html.escape(what)} · passed when the notebook was run; nbdev-test runs them</span></summary>\n'))
            out += cells[i:j]
            out.append(_md("</details>"))
            folds, i = folds + 1, j
        elif j > i:
            out += cells[i:j]
            i = j
        else:
            out.append(cells[i])
            i += 1
    nb["cells"] = out
    return folds


RULE = re.compile(r"^\s*[-=─━]{8,}\s*$")


def text_table(text: str) -> str | None:
    "HTML for printed output holding a fixed-width table (a header, a rule of dashes, rows whose columns are separated "
    "by two or more spaces), with the lines before and after it kept as text; None when there is no such table."
    lines = text.rstrip("\n").split("\n")
    at = next((k for k in range(1, len(lines)) if RULE.match(lines[k])), None)
    if at is None:
        return None
    split = lambda line: re.split(r"\s{2,}", line.strip())
    head = split(lines[at - 1])
    rows, k = [], at + 1
    while k < len(lines) and lines[k].strip() and len(split(lines[k])) == len(head):
        rows.append(split(lines[k]))
        k += 1
    if len(head) < 3 or not rows:
        return None
    num = re.compile(r"^[-+±]?[\d.,]+\s*%?$")
    right = [all(num.match(r[c]) for r in rows) for c in range(len(head))]
    cls = lambda c: ' class="num"' if right[c] else ""
    th = "".join(f"<th{cls(c)}>{html.escape(h)}</th>" for c, h in enumerate(head))
    tb = "".join("<tr>" + "".join(f"<td{cls(c)}>{html.escape(v)}</td>" for c, v in enumerate(r)) + "</tr>" for r in rows)
    pre = lambda ls: f"<pre><code>{html.escape(chr(10).join(ls))}</code></pre>" if any(x.strip() for x in ls) else ""
    return (pre(lines[:at - 1]) + f'<div class="x-scroll"><table class="table table-sm text-table"><thead><tr>{th}</tr></thead><tbody>{tb}</tbody></table></div>'
            + pre(lines[k:]))


def tables_from_text(nb: dict) -> int:
    "Turn printed fixed-width tables into HTML tables, which fit a phone; return how many."
    n = 0
    for cell in nb["cells"]:
        for k, o in enumerate(cell.get("outputs", [])):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                text = _src({"source": o.get("text", "")})
            elif o.get("output_type") == "execute_result" and set(o.get("data", {})) == {"text/plain"}:
                text = _src({"source": o["data"]["text/plain"]})
            else:
                continue
            t = text_table(text)
            if t:
                cell["outputs"][k] = {"output_type": "display_data", "metadata": {"minidl_text_table": True},
                                      "data": {"text/html": t, "text/plain": text}}
                n += 1
    return n


MATH_FN = {"max", "min", "mean", "sum", "exp", "log", "sqrt"}
GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "lambda", "mu", "sigma", "tau", "phi", "rho", "pi",
         "Phi", "Sigma", "Delta", "Gamma", "Lambda"}


def ascii_tex(expr: str) -> str:
    "TeX for a docstring's ASCII formula such as `dL/dW = G^T X` or `dL/dp = (p - t) / max(p (1 - p), 1e-12) / n`."
    def word(m):
        w = m.group(0)
        if w in MATH_FN:
            return "\\operatorname{mean}" if w == "mean" else f"\\{w}"
        return var(w)
    var = lambda w: w if len(w) == 1 else f"\\{w}" if w in GREEK else f"\\text{{{w}}}"
    t = re.sub(r"\bd([A-Za-z])/d(\w+)", lambda m: f"\\partial {m.group(1)}/\\partial " + var(m.group(2)), expr)
    t = re.sub(r"\b([A-Za-z])\^T\b", r"\1^\\top", t)
    t = re.sub(r"sqrt\(([^()]*)\)", r"\\sqrt{\1}", t)
    t = re.sub(r"\\sqrt\{([A-Za-z_]{2,})\}", r"\\sqrt{\\text{\1}}", t)
    t = re.sub(r"^U\[", r"\\mathcal{U}[", t)
    t = re.sub(r"(?<![\\\w{])[A-Za-z_][A-Za-z_]+(?![\w{])", word, t)  # words, not commands already made
    t = re.sub(r"\b1e-(\d+)\b", r"10^{-\1}", t)
    return t.replace("*", "\\cdot ").replace("_", "\\_")


FORMULA = re.compile(r"\bd[A-Z]/d\w+(?:\s*=\s*[^;`]+?(?=\s+(?:and|into|as|for|from|or|with|where|if|when|in)\s|,\s+[A-Za-z]{2,}\b"
                     r"|;|\.\s|\.?$))?"
                     r"|\bU\[[^\]\s][^\]]*\]")  # dL/dW = G^T X; U[-1/sqrt(n), 1/sqrt(n)]


def docstring_maths(md: str) -> str:
    "Render the ASCII maths of show_doc's docstring line (the italic line under the signature) as TeX."
    def line(m):
        body = m.group(1)
        parts = re.split(r"(`[^`]*`)", body)  # leave code spans alone
        parts = [p if p.startswith("`") else FORMULA.sub(lambda f: f"${ascii_tex(f.group(0).strip())}$", p) for p in parts]
        return "*" + "".join(parts) + "*"
    return re.sub(r"^\*(.+)\*$", line, md, flags=re.M)


def class_names(nbs: Path) -> set[str]:
    "The names of the classes the notebooks define."
    names = set()
    for nb in notebooks(nbs):
        for cell in json.loads((nbs / nb).read_text(encoding="utf-8")).get("cells", []):
            if cell.get("cell_type") == "code":
                names |= set(re.findall(r"^class\s+(\w+)", _src(cell), re.M))
    return names


def show_doc_fixes(nb: dict, classes: set[str]) -> None:
    "show_doc output: `class Linear(` for a class (nbdev writes `def`), and docstring maths as TeX."
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if md is None:
                continue
            md = _src({"source": md})
            if "```python" not in md:
                continue
            m = re.search(r"^#{2,4} (\w+)\s*$", md, re.M)
            if m and m.group(1) in classes:
                md = re.sub(rf"^def {m.group(1)}\(", f"class {m.group(1)}(", md, count=1, flags=re.M)
            o["data"]["text/markdown"] = docstring_maths(md)


def exports_summary(nb: dict, src: Path) -> None:
    "Name the module under nbdev's `Exported source` fold of an `#| exports` cell (from the notebook's `default_exp`)."
    mod = None
    if src.exists():
        for cell in json.loads(src.read_text(encoding="utf-8")).get("cells", []):
            m = re.search(r"^#\|\s*default_exp\s+(\S+)", _src(cell), re.M) if cell.get("cell_type") == "code" else None
            if m:
                mod = f"minidl/{m.group(1).replace('.', '/')}.py"
                break
    for cell in nb["cells"]:
        src_ = _src(cell)
        if cell.get("cell_type") == "code" and '#| code-summary: "Exported source"' in src_:
            what = f"Source · {mod}" if mod else "Source"
            cell["source"] = src_.replace('#| code-summary: "Exported source"', f'#| code-summary: "{what}"')


MATH_DEFS = re.compile(r"^\s*def\s+(?:\w*forward\w*|\w*backward\w*|step)\s*\(", re.M)  # the code of the derivations


def fold_sources(nb: dict) -> set[str]:
    "Fold nbdev's `Source` block of each `#| exports` cell, except those whose code is the maths of the page (a "
    "`forward`, a `backward`, an optimizer's `step`): the reference reads as derivation, code of the derivation, API. "
    "Return the names whose definition stays open on the page (`Linear`, `Linear.forward`, `_helper`)."
    shown = set()
    for cell in nb["cells"]:
        src = _src(cell)
        if cell.get("cell_type") != "code" or '#| code-summary: "Source' not in src or "#| code-fold: show" not in src:
            continue
        if not MATH_DEFS.search(src):
            cell["source"] = src.replace("#| code-fold: show", "#| code-fold: true", 1)
            continue
        try:
            tree = ast.parse("\n".join(ln for ln in src.splitlines() if not ln.startswith("#|")))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                shown.add(node.name)
            elif isinstance(node, ast.ClassDef):
                shown.add(node.name)
                shown |= {f"{node.name}.{f.name}" for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return shown


API_SIGNATURE = re.compile(r"\n```python\n.*?\n```\n", re.S)


def one_signature(nb: dict, shown: set[str]) -> int:
    "Drop the signature from the API card (show_doc) of a name whose definition is open on the page above it: the "
    "signature, with its parameters' comments, is then read once, in the code; the card keeps its heading, its source "
    "link and its docstring. Return how many cards."
    n = 0
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if md is None:
                continue
            md = _src({"source": md})
            m = re.search(r"^#{2,4} ([\w.]+)\s*$", md, re.M)
            if m and m.group(1) in shown and API_SIGNATURE.search(md):
                o["data"]["text/markdown"] = API_SIGNATURE.sub("\n", md, count=1).replace(
                    m.group(0), m.group(0) + "\n\n<p class=\"api-defined-above\">defined in the source above</p>", 1)
                n += 1
    return n


def present(proc: Path, nbs: Path) -> None:
    "Apply the presentation edits above to every processed notebook."
    classes = class_names(nbs)
    folds = tables = cards = 0
    for f in sorted(proc.glob("*.ipynb")):
        nb = json.loads(f.read_text(encoding="utf-8"))
        exports_summary(nb, nbs / f.name)
        show_doc_fixes(nb, classes)
        cards += one_signature(nb, fold_sources(nb))
        tables += tables_from_text(nb)
        folds += fold_checks(nb)
        f.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")
    say(f"folded {folds} runs of checks, turned {tables} printed tables into tables, {cards} API cards sign below their source")


# ---------------------------------------------------------------- 3. smalldocs


TEX_WORDS = {"partial": "∂", "top": "ᵀ", "sum": "Σ", "prod": "Π", "infty": "∞", "approx": "≈", "le": "≤", "leq": "≤",
             "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "times": "×", "cdot": "·", "odot": "⊙", "in": "∈", "to": "→",
             "rightarrow": "→", "mapsto": "↦", "ldots": "…", "cdots": "⋯", "dots": "…", "pm": "±", "mid": "|", "nabla": "∇",
             "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε", "eta": "η",
             "theta": "θ", "lambda": "λ", "mu": "μ", "sigma": "σ", "tau": "τ", "phi": "φ", "pi": "π", "rho": "ρ",
             "Delta": "Δ", "Sigma": "Σ", "max": "max", "min": "min", "log": "log", "exp": "exp", "tanh": "tanh"}


def tex_text(tex: str) -> str:
    "Readable plain text for a TeX formula, for search snippets: `\\partial L/\\partial W = G^\\top X` -> `∂L/∂W = Gᵀ X`."
    keep = {"frac", "dfrac", "tfrac", "sqrt"}
    t = re.sub(r"\^\\top|\^\{\\top\}|\^T\b", "ᵀ", tex)
    t = re.sub(r"\\(?:left|right|big|Big|bigg|displaystyle|textstyle)\b", "", t)
    for _ in range(6):  # innermost braces first
        t = re.sub(r"\\(?:text|mathrm|mathbf|mathbb|operatorname|boldsymbol|mathcal|texttt)\s*\{([^{}]*)\}",
                   lambda m: {"R": "ℝ"}.get(m.group(1), m.group(1)), t)
        t = re.sub(r"\\([A-Za-z]+)\s*", lambda m: m.group(0) if m.group(1) in keep else (" " if m.group(1) in ("sum", "prod") else "")
                   + TEX_WORDS.get(m.group(1), "")
                   + (" " if m.group(1) in ("in", "to", "le", "ge", "leq", "geq", "approx", "times", "cdot") else ""), t)
        t = re.sub(r"([_^])\{([^{}]*)\}", lambda m: m.group(1) + (m.group(2) if re.fullmatch(r"[\w,.∂]+", m.group(2)) else f"({m.group(2)})"), t)
        t = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"√(\1)", t)
        t = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", lambda m: "/".join(
            x if re.fullmatch(r"[^\s+\-=]+", x.strip()) else f"({x.strip()})" for x in m.groups()), t)
    t = re.sub(r"\\[,;:! ]|\\\\|&", " ", t)
    t = t.replace("{", "").replace("}", "").replace("\\", "")
    return re.sub(r"\s+", " ", t).strip()


def search_without_tex() -> None:
    "Make smalldocs index the maths of a section as readable text (∂L/∂W), not as raw TeX (\\partial L/\\partial W)."
    import smalldocs.markdown as sm

    if getattr(sm.Rules.search_text, "_minidl", False):
        return
    orig_plain, orig_search = sm.plain, sm.Rules.search_text

    def plain(tokens):
        return "".join(tex_text(t.content) if t.type == "math_inline" else orig_plain([t]) for t in tokens or [])

    def search_text(self, state):
        sm.plain = plain
        try:
            return orig_search(self, state)
        finally:
            sm.plain = orig_plain

    search_text._minidl = True
    sm.Rules.search_text = search_text


def render_site(proc: Path) -> Path:
    "Render `_proc/` with smalldocs; return the output folder (`_proc/docs`)."
    from smalldocs.config import load
    from smalldocs.site import Site

    class NbdevSite(Site):
        "smalldocs plus Quarto's `output-file`, which nbdev's front matter uses to strip the number prefix."

        def read(self, src):
            page = super().read(src)
            out = page.front.get("output-file")
            if out:
                page.out = src.parent / PurePosixPath(str(out))
            return page

        def find_page(self, target):  # a link may name the notebook (10_linear.ipynb) or its page (linear.html)
            found = super().find_page(target)
            return found if found is not None else next((p for p in self.pages.values() if p.out == target), None)

    search_without_tex()
    site = NbdevSite(load(proc), quiet=True)
    shutil.rmtree(site.out, ignore_errors=True)
    n = site.build()
    warnings = [w for w in site.warnings if not QUIET.search(w)]
    for w in warnings:
        say(f"smalldocs warning: {w}")
    broken = [w for w in warnings if "broken link" in w]
    if broken:
        raise SystemExit(f"build_docs: {len(broken)} broken link(s), see above")
    say(f"smalldocs wrote {n} pages")
    return site.out


# ---------------------------------------------------------------- 4. offline and deterministic


def katex_dist() -> Path:
    "The `dist/` folder of the pinned KaTeX: `npm ci` into a cache keyed by the lock file, once."
    lock = (KATEX_PIN / "package-lock.json").read_bytes()
    version = json.loads(lock)["packages"]["node_modules/katex"]["version"]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minidl-docs"
    prefix = cache / f"katex-{version}-{hashlib.sha256(lock).hexdigest()[:12]}"
    dist = prefix / "node_modules" / "katex" / "dist"
    if not (dist / "katex.min.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("build_docs: npm is needed once, to install the pinned KaTeX (apt-get install -y npm)")
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(parents=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(KATEX_PIN / f, prefix / f)
        say(f"installing KaTeX {version} with npm ci into {prefix}")
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"], cwd=prefix, check=True)
    got = json.loads((dist.parent / "package.json").read_text())["version"]
    if got != version:
        raise SystemExit(f"build_docs: {dist} holds KaTeX {got}, the lock file pins {version}")
    return dist


def vendor_katex(out: Path) -> None:
    "Copy KaTeX's script, auto-render, stylesheet and woff2 fonts into `site_libs/katex` (woff2 is all browsers need)."
    dist, dest = katex_dist(), out / "site_libs" / "katex"
    (dest / "contrib").mkdir(parents=True)
    (dest / "fonts").mkdir()
    shutil.copy(dist / "katex.min.js", dest / "katex.min.js")
    shutil.copy(dist / "contrib" / "auto-render.min.js", dest / "contrib" / "auto-render.min.js")
    css = (dist / "katex.min.css").read_text(encoding="utf-8")
    css = re.sub(r',url\(fonts/[^)]+\.(?:woff|ttf)\) format\("(?:woff|truetype)"\)', "", css)  # keep the woff2 source
    (dest / "katex.min.css").write_text(css, encoding="utf-8")
    for f in sorted(dist.glob("fonts/*.woff2")):
        shutil.copy(f, dest / "fonts" / f.name)
    shutil.copy(dist.parent / "LICENSE", dest / "LICENSE")


ASSET = re.compile(r"<(?:script|link|img|iframe|source|video|audio)\b[^>]*?\b(?:src|href)=\"(https?:)?//", re.I)


def finish_pages(out: Path, doc_url: str) -> None:
    "Point pages at the local KaTeX, make links to the hosted docs relative, and refuse pages that load remote assets."
    base = doc_url.rstrip("/") + "/"
    bad = []
    for page in sorted(out.rglob("*.html")):
        up = "../" * (len(page.relative_to(out).parts) - 1)
        text = page.read_text(encoding="utf-8")
        new = KATEX_CDN.sub(f"{up}site_libs/katex/", text)
        new = new.replace(f'href="{base}', f'href="{up}')  # nbdev's symbol links point at the hosted site
        if new != text:
            page.write_text(new, encoding="utf-8")
        bad += [f"{page.relative_to(out)}: {m.group(0)}" for m in ASSET.finditer(new)]
    for css in sorted(out.rglob("*.css")):  # Bootswatch themes @import their web fonts; the site falls back to local fonts
        text = css.read_text(encoding="utf-8")
        new = re.sub(r"@import\s+url\([\"']?(?:https?:)?//[^)]*\)\s*;?", "", text)
        if new != text:
            css.write_text(new, encoding="utf-8")
        bad += [f"{css.relative_to(out)}: {m.group(0)}" for m in re.finditer(r"url\([\"']?(?:https?:)?//[^)]*\)", new)]
    if bad:
        raise SystemExit("build_docs: the site loads files from other hosts:\n  " + "\n  ".join(bad))
    sitemap = out / "sitemap.xml"
    if sitemap.exists():  # lastmod is the file time of the processed notebook: different on every checkout
        sitemap.write_text(re.sub(r"\n *<lastmod>[^<]*</lastmod>", "", sitemap.read_text(encoding="utf-8")), encoding="utf-8")
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve the folder as it is


# ---------------------------------------------------------------- 4b. the page's HTML: code lines, figures, anchors

SITE_JS = ROOT / "tools" / "site.js"  # the lightbox for figures (no library, nothing from another host)
PRE_CODE = re.compile(r"(<pre\b[^>]*>\s*<code\b[^>]*>)(.*?)(</code>\s*</pre>)", re.S)
TOKEN = re.compile(r"<(/?)([a-zA-Z][\w-]*)[^>]*>|[^<]+")


# Where a code line may break besides its spaces: after an opening bracket that something follows, and before the dot of a
# call chain (`torch.Generator()` / `.manual_seed(0)`); tags are skipped (group 1), never cut.
PROSE = re.compile(r'(<span class="(?:co|st|ss|do|ch)">[^<]*</span>)')  # comments and strings: they break at their spaces
BREAK_AT = re.compile(r"(?<=[)\]])(?=(?:<[^>]*>)*\.(?:<[^>]*>)*[A-Za-z_])|(<[^>]*>)|([(\[{])(?=(?:<[^>]*>)*[^\s)\]}<])")


def code_lines(inner: str) -> str:
    "Wrap each line of a code block's HTML in `<span class=\"ln\" style=\"--i:N\">` (N: its indentation), closing and "
    "reopening the highlighting spans a line break cuts, so that CSS gives a wrapped line a hanging indent. An indented "
    "line's leading spaces and first character go in `<span class=\"ln-lead\">`, which does not wrap: a line never breaks "
    "right after its indentation (that would leave a blank row and show the code 4 columns too deep). Deeper lines "
    "(continuations aligned far right, wider than a phone) hang at 28 columns (styles.css). Lines wrap at spaces, never "
    "inside a name; a `<wbr>` after each opening bracket lets `f(torch.empty(n,` break after a `(` too."
    lines, cur, stack = [], [], []  # cur: the line's tokens, (tag, name or None) or (text, None)
    def end_line():
        lines.append(cur + [(f"</{name}>", "/" + name) for name, _ in reversed(stack)])
    for m in TOKEN.finditer(inner):
        tok = m.group(0)
        if m.group(2):
            name = m.group(2).lower()
            if m.group(1):
                if stack and stack[-1][0] == name:
                    stack.pop()
                cur.append((tok, "/" + name))
            elif not tok.endswith("/>") and name not in ("br", "img", "wbr"):
                stack.append((name, tok))
                cur.append((tok, name))
            else:
                cur.append((tok, "/" + name))
            continue
        for k, piece in enumerate(tok.split("\n")):
            if k:
                end_line()
                cur = [(t, name) for name, t in stack]
            if piece:
                cur.append((piece, None))
    end_line()
    out = []
    for k, toks in enumerate(lines):
        text = "".join(html.unescape(t) for t, name in toks if name is None)
        n = len(text.expandtabs(4)) - len(text.expandtabs(4).lstrip(" "))
        body = "".join(t for t, _ in toks)
        if 0 < n <= 24 and text.strip():  # put the indentation and the first character in a span that does not wrap
            opened, parts = [], []
            for j, (t, name) in enumerate(toks):
                if name is None and t.strip():
                    lead = len(t) - len(t.lstrip())
                    ch = 1 if t[lead] != "&" else t.index(";", lead) + 1 - lead  # an entity is one character
                    closing = "".join(f"</{nm}>" for nm, _ in reversed(opened))
                    reopening = "".join(tag for _, tag in opened)
                    parts.append(t[:lead + ch] + closing + "</span>" + reopening + t[lead + ch:])
                    parts += [t2 for t2, _ in toks[j + 1:]]
                    break
                parts.append(t)
                if name and not name.startswith("/"):
                    opened.append((name, t))
                elif name and opened and opened[-1][0] == name[1:]:
                    opened.pop()
            body = '<span class="ln-lead">' + "".join(parts)
        body = "".join(part if PROSE.fullmatch(part) else BREAK_AT.sub(lambda m: m.group(1) or (m.group(2) + "<wbr>" if m.group(2) else "<wbr>"), part)
                       for part in PROSE.split(body))
        style = f' style="--i:{n}"' if n else ""
        out.append(f'<span class="ln"{style}>{body}{chr(10) if k < len(lines) - 1 else ""}</span>')
    return "".join(out)


DATA_IMG = re.compile(r'<img\b([^>]*?)\bsrc="data:image/(png|jpeg|gif|svg\+xml);base64,([A-Za-z0-9+/=\s]+)"([^>]*)>')


def figures_to_files(text: str, out: Path, up: str) -> str:
    "Move each inline (base64) figure of a page to `figures/<hash>.<ext>` and link it to itself: a click enlarges it "
    "(site.js shows it in a lightbox; without JavaScript the link opens the full-size image)."
    import base64

    def one(m):
        data = base64.b64decode(re.sub(r"\s+", "", m.group(3)))
        ext = {"jpeg": "jpg", "svg+xml": "svg"}.get(m.group(2), m.group(2))
        name = f"figures/{hashlib.sha256(data).hexdigest()[:16]}.{ext}"
        (out / "figures").mkdir(exist_ok=True)
        (out / name).write_bytes(data)
        attrs = (m.group(1) + m.group(4)).strip()
        alt = re.search(r'\balt="([^"]*)"', attrs)
        title = f"{alt.group(1)} (click to enlarge)" if alt else "Click to enlarge"
        return (f'<a class="figure-zoom" href="{up}{name}" title="{title}">'
                f'<img src="{up}{name}" {attrs}></a>').replace(" >", ">")
    return DATA_IMG.sub(one, text)


TABLE = re.compile(r"<table\b([^>]*)>(.*?)</table>", re.S)
STACK_COLUMNS = 5  # a table with this many columns or more (3 with maths or code) becomes a list of cards on a phone


def stack_tables(text: str) -> str:
    "Give each cell of a wide table its column's name (`data-label`) and the table the class `stack`: on a phone the "
    "CSS shows each row as a card of `name: value` lines, instead of columns squeezed to a few letters."
    def one(m):
        attrs, body = m.group(1), m.group(2)
        head = re.search(r"<thead\b.*?</thead>", body, re.S)
        if not head or re.search(r"\b(?:colspan|rowspan)=", body) or 'class="math' in head.group(0):
            return m.group(0)  # (a column named by a formula would show its TeX as the card's label)
        names = [html.escape(" ".join(html.unescape(re.sub(r"<[^>]+>", "", h)).split()), quote=True)
                 for h in re.findall(r"<th\b[^>]*>(.*?)</th>", head.group(0), re.S)]
        unbreakable = re.search(r'class="math|<code', body)  # formulas and code do not wrap inside a cell
        if len(names) < (3 if unbreakable else STACK_COLUMNS):
            return m.group(0)

        def row(r):
            k = iter(range(10 ** 6))
            return re.sub(r"<td\b", lambda c: f'<td data-label="{names[i]}"' if (i := next(k)) < len(names) else c.group(0), r.group(0))
        rest = re.sub(r"<tr\b.*?</tr>", row, body[head.end():], flags=re.S)
        cls = re.search(r'\bclass="([^"]*)"', attrs)
        attrs = attrs.replace(cls.group(0), f'class="{cls.group(1)} stack"') if cls else attrs + ' class="stack"'
        return f"<table{attrs}>{body[:head.end()]}{rest}</table>"

    def boxed(m):  # every table scrolls in its own box (smalldocs boxes Markdown tables in div.sd-table)
        t = one(m)
        inside = re.search(r'<div class="(?:sd-table|x-scroll)">\s*$', text[max(0, m.start() - 40):m.start()])
        return t if inside else f'<div class="x-scroll">{t}</div>'
    return TABLE.sub(boxed, text)


def page_ids(out: Path) -> dict[str, set[str]]:
    "The ids of every page (the anchors a link may name), by path relative to the site."
    return {str(p.relative_to(out)): set(re.findall(r'\bid="([^"]+)"', p.read_text(encoding="utf-8"))) for p in out.rglob("*.html")}


LINK = re.compile(r'<a\b[^>]*?\bhref="([^"#:?]*\.html|)#([^"]+)"[^>]*>(.*?)</a>', re.S)


def fix_anchors(out: Path) -> None:
    "Every link to an anchor must find it. nbdev links each backticked name it knows to its symbol's anchor, even a "
    "private helper that has no show_doc (`linear.html#_ones`): such a link becomes its plain code; any other broken "
    "anchor fails the build."
    ids, broken = page_ids(out), []
    for page in sorted(out.rglob("*.html")):
        rel = page.relative_to(out)

        def one(m):
            target = str((rel.parent / m.group(1)).as_posix()) if m.group(1) else str(rel)
            target = os.path.normpath(target)
            if target not in ids or m.group(2) in ids[target]:
                return m.group(0)
            if re.fullmatch(r"\s*<code>[^<]*</code>\s*", m.group(3)):  # nbdev's symbol link
                return m.group(3)
            broken.append(f"{rel}: {m.group(1)}#{m.group(2)}")
            return m.group(0)
        text = page.read_text(encoding="utf-8")
        new = LINK.sub(one, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
    if broken:
        raise SystemExit("build_docs: links to anchors that do not exist:\n  " + "\n  ".join(broken))


def polish_pages(out: Path) -> None:
    "Code lines with hanging indents, figures in files and enlargeable, the site's script, anchors that resolve."
    shutil.copy(SITE_JS, out / "site_libs" / "minidl.js")
    for page in sorted(out.rglob("*.html")):
        up = "../" * (len(page.relative_to(out).parts) - 1)
        text = page.read_text(encoding="utf-8")
        new = PRE_CODE.sub(lambda m: m.group(1) + code_lines(m.group(2)) + m.group(3), text)
        new = figures_to_files(new, out, up)
        new = stack_tables(new)
        new = new.replace("</head>", f'<script src="{up}site_libs/minidl.js" defer></script></head>', 1)
        if new != text:
            page.write_text(new, encoding="utf-8")
    fix_anchors(out)


# ---------------------------------------------------------------- 5. README.md


def write_readme(c, proc: Path) -> None:
    "Write README.md (and its figures in `index_files/`) from the processed `index.ipynb`, as nbdev-readme would."
    import nbformat
    from nbconvert import MarkdownExporter
    from nbdev.readme_filter import doc_link
    from smalldocs.notebook import cell_options
    from traitlets.config import Config

    src = proc / c.readme_nb
    if not src.exists():
        say(f"no {c.readme_nb}: README.md left as it is")
        return
    nb = nbformat.read(src, as_version=4)
    front = {}
    if nb.cells and nb.cells[0].cell_type == "raw" and nb.cells[0].source.startswith("---"):
        front = yaml.safe_load(nb.cells.pop(0).source.strip().strip("-")) or {}
    nb.metadata.setdefault("language_info", {"name": "python"})  # nbconvert's code fences take their language from it
    for cell in nb.cells:  # apply Quarto's cell options, which nbdev leaves for Quarto
        if cell.cell_type != "code":
            continue
        for k, o in enumerate(cell.get("outputs", [])):  # printed tables stay printed text in the README
            if o.get("metadata", {}).get("minidl_text_table"):
                cell.outputs[k] = nbformat.v4.new_output("stream", name="stdout", text=o["data"]["text/plain"])
        opts, code = cell_options(cell.source)
        cell.source = code.strip("\n")
        tags = set(cell.metadata.get("tags", []))
        tags |= {"remove_cell"} if opts.get("include") is False else set()
        tags |= {"remove_input"} if opts.get("echo") is False or not cell.source else set()
        tags |= {"remove_output"} if opts.get("output") is False else set()
        cell.metadata["tags"] = sorted(tags)
    conf = Config()
    conf.TagRemovePreprocessor.update(enabled=True, remove_cell_tags={"remove_cell"}, remove_input_tags={"remove_input"},
                                      remove_all_outputs_tags={"remove_output"})
    body, res = MarkdownExporter(config=conf).from_notebook_node(nb, resources={"output_files_dir": "index_files", "unique_key": "index"})
    body = re.sub(r"\]\(([^)\s]+)\)", lambda m: f"]({doc_link(m.group(1), c.doc_url)})", body)  # doc links -> hosted site
    head = f"# {front.get('title', c.lib_name)}\n\n" + (f"> {front['description']}\n\n" if front.get("description") else "")
    note = f"<!-- Generated from nbs/{c.readme_nb} by tools/build_docs.py; edit the notebook, not this file -->\n\n"
    body = body.replace("<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->", "")  # nbdev's; ours is above
    text = head + note + re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    shutil.rmtree(ROOT / "index_files", ignore_errors=True)
    for name, data in sorted(res.get("outputs", {}).items()):
        (ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / name).write_bytes(data)
    (ROOT / "README.md").write_text(text, encoding="utf-8")


# ----------------------------------------------------------------


def check_repository_links(c) -> None:
    "The footer's and navbar's repository links (`_quarto.yml`) and nbdev's `repo-url` must be pyproject's Repository URL."
    import tomllib

    url = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"].rstrip("/")
    found = re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", (c.nbs_path / "_quarto.yml").read_text(encoding="utf-8"))
    found += re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", (c.nbs_path / "nbdev.yml").read_text(encoding="utf-8"))
    wrong = sorted({u for u in found if u.rstrip("/") != url})
    if wrong or not found:
        raise SystemExit(f"build_docs: repository links {wrong or '(none)'} in nbs/_quarto.yml or nbs/nbdev.yml differ from "
                         f"pyproject's Repository URL {url}")


def build() -> None:
    "Rebuild `nbs/sidebar.yml`, `docs/`, README.md and `index_files/` from `nbs/`."
    start = time.perf_counter()
    c = cfg()
    check_repository_links(c)
    write_sidebar(c.nbs_path)
    proc = process_notebooks(c)
    say(f"nbdev processed the notebooks into {proc.relative_to(ROOT)} ({time.perf_counter() - start:.1f}s)")
    present(proc, c.nbs_path)
    out = render_site(proc)
    vendor_katex(out)
    finish_pages(out, c.doc_url)
    polish_pages(out)
    shutil.rmtree(c.doc_path, ignore_errors=True)
    shutil.move(str(out), str(c.doc_path))
    write_readme(c, proc)
    say(f"built {c.doc_path.relative_to(ROOT)}/ and README.md in {time.perf_counter() - start:.1f}s")


def serve(folder: Path, port: int) -> None:
    "Serve the site on 127.0.0.1 (search loads search.json, which browsers refuse over file://)."
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        say(f"serving {folder} on http://127.0.0.1:{port}/ (Ctrl-C stops)")
        httpd.serve_forever()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", action="store_true", help="serve docs/ on 127.0.0.1 after building")
    p.add_argument("--no-build", action="store_true", help="with --serve: serve the docs/ that is there")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    if not a.no_build:
        build()
    if a.serve:
        serve(ROOT / "docs", a.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
