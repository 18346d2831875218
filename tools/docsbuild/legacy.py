"Walls of checks folded and printed tables turned into tables, found by parsing (until the notebooks say so themselves)."

import ast
import html
import re

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


