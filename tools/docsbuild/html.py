"""The pages' HTML, parsed with BeautifulSoup: local assets, code lines with hanging indents, figures in files,
tables that fit a phone, anchors that resolve."""

import base64
import hashlib
import os
import re
import shutil
from pathlib import Path

from bs4 import BeautifulSoup, Tag

from . import ROOT
from .katex import CDN

SITE_JS = ROOT / "tools" / "site.js"  # the lightbox for figures and the cue on boxes that scroll sideways
PROSE = {"co", "st", "ss", "do", "ch"}  # comments and strings: they break at their spaces only
STACK_COLUMNS = 5  # a table with this many columns or more (3 with maths or code) becomes a list of cards on a phone
ASSETS = {
    "script": "src",
    "link": "href",
    "img": "src",
    "iframe": "src",
    "source": "src",
    "video": "src",
    "audio": "src",
}


def _breaks(text: str) -> set[int]:
    "Where a code line may break besides its spaces: after an opening bracket that something follows, and before the "
    "dot of a call chain (`torch.Generator()` / `.manual_seed(0)`)."
    return ({m.end() for m in re.finditer(r"[(\[{](?=[^\s)\]}])", text)}
            | {m.start() + 1 for m in re.finditer(r"[)\]]\.[A-Za-z_]", text)})


def code_lines(soup, code: Tag) -> None:
    "Put each line of a code block in `<span class=\"ln\" style=\"--i:N\">` (N: its indentation), so that CSS gives a "
    "wrapped line a hanging indent; an indented line's spaces and first character go in a `ln-lead` span that does not "
    "wrap (a line never breaks right after its indentation); a `<wbr>` marks the breaks of `_breaks` outside strings."
    if any(isinstance(k, Tag) and (k.name != "span" or k.find(True)) for k in code.children):
        return  # not plain or Pygments-highlighted code
    lines = [[]]  # each line: (css class, text) pieces
    for k in code.children:
        cls = " ".join(k.get("class", [])) if isinstance(k, Tag) else ""
        for j, piece in enumerate(k.get_text().split("\n")):
            if j:
                lines.append([])
            if piece:
                lines[-1].append((cls, piece))
    code.clear()
    for n, line in enumerate(lines):
        text = "".join(t for _, t in line).expandtabs(4)
        indent = len(text) - len(text.lstrip(" "))
        cuts = {c for c in _breaks(text) if c > indent}
        ln = soup.new_tag("span", attrs={"class": "ln", **({"style": f"--i:{indent}"} if indent else {})})
        lead = soup.new_tag("span", attrs={"class": "ln-lead"}) if 0 < indent <= 24 and text.strip() else None
        if lead:
            ln.append(lead)
        at = 0
        for cls, piece in line:
            piece = piece.expandtabs(4)
            here = set() if cls in PROSE else {c - at for c in cuts if at < c <= at + len(piece)}
            bounds = sorted(
                {0, len(piece)}
                | here
                | ({indent + 1 - at} if lead and at < indent + 1 < at + len(piece) else set())
            )
            for a, b in zip(bounds, bounds[1:]):
                bit = piece[a:b]
                if cls:
                    bit = soup.new_tag("span", attrs={"class": cls})
                    bit.append(piece[a:b])
                (lead if lead and at + a < indent + 1 else ln).append(bit)
                if b in here:
                    ln.append(soup.new_tag("wbr"))
            at += len(piece)
        if n < len(lines) - 1:
            ln.append("\n")
        code.append(ln)


def figure_name(mime: str, data: bytes) -> str:
    "Where a figure's file goes in the site, from its content (`png`, bytes): `figures/<hash>.png`."
    return f"figures/{hashlib.sha256(data).hexdigest()[:16]}.{ {'jpeg': 'jpg', 'svg+xml': 'svg'}.get(mime, mime)}"


def figure_file(soup, img: Tag, out: Path, up: str) -> None:
    ("Move an inline (base64) figure to `figures/<hash>.<ext>` and link it to itself: a click enlarges it "
     "(site.js shows ")
    "it in a lightbox; without JavaScript the link opens the full-size image)."
    mime, data = re.match(r"data:image/([\w+]+);base64,(.*)", img["src"], re.S).groups()
    data = base64.b64decode(re.sub(r"\s+", "", data))
    name = figure_name(mime, data)
    (out / "figures").mkdir(exist_ok=True)
    (out / name).write_bytes(data)
    img["src"] = up + name
    title = f"{img['alt']} (click to enlarge)" if img.get("alt") else "Click to enlarge"
    img.wrap(soup.new_tag("a", attrs={"class": "figure-zoom", "href": up + name, "title": title}))


def table_box(soup, table: Tag) -> None:
    "Every table scrolls in its own box (smalldocs boxes Markdown tables in div.sd-table); a wide one gives each cell "
    ("its column's name (`data-label`) and the class `stack`: on a phone the CSS shows each row as a card of "
     "`name: value`.")
    box = table.parent
    if not (box.name == "div" and {"sd-table", "x-scroll"} & set(box.get("class", [])) and box.find(True) is table):
        table.wrap(soup.new_tag("div", attrs={"class": "x-scroll"}))
    head = table.find("thead")
    if (
        not head
        or table.find(attrs={"colspan": True})
        or table.find(attrs={"rowspan": True})
        or head.select_one(".math")
    ):
        return  # (a column named by a formula would show its TeX as the card's label)
    names = [" ".join(th.get_text().split()) for th in head.find_all("th")]
    # formulas and code do not wrap in a cell
    if len(names) < (3 if table.select_one(".math, code") else STACK_COLUMNS):
        return
    for tr in table.find_all("tr"):
        if tr.find_parent("thead") is None:
            for name, td in zip(names, tr.find_all("td", recursive=False)):
                td["data-label"] = name
    table["class"] = table.get("class", []) + ["stack"]


def polish_page(page: Path, out: Path, doc_url: str) -> BeautifulSoup:
    "Every edit of one page; return its soup, whose ids `fix_anchors` needs."
    up = "../" * (len(page.relative_to(out).parts) - 1)
    base = doc_url.rstrip("/") + "/"
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    for tag, attr in ((t, ASSETS.get(t.name, "href")) for t in soup.find_all(["a", *ASSETS])):
        url = tag.get(attr) or ""
        if url.startswith(CDN):  # KaTeX: the vendored copy
            tag[attr] = up + "site_libs/katex/" + url.split("/dist/", 1)[1]
        elif tag.name == "a" and url.startswith(base):  # nbdev's symbol links point at the hosted site
            tag[attr] = up + url[len(base):]
        elif tag.name != "a" and re.match(r"(https?:)?//", url):
            raise SystemExit(f"build_docs: {page.relative_to(out)} loads {url} from another host")
    for code in soup.select("pre > code"):
        code_lines(soup, code)
    for img in soup.select('img[src^="data:image/"]'):
        figure_file(soup, img, out, up)
    for table in soup.find_all("table"):
        table_box(soup, table)
    soup.head.append(soup.new_tag("script", attrs={"src": f"{up}site_libs/minidl.js", "defer": ""}))
    return soup


def fix_anchors(out: Path, soups: dict[Path, BeautifulSoup]) -> None:
    "Every link to an anchor must find it. nbdev links each backticked name it knows to its symbol's anchor, even a "
    ("private helper that has no show_doc (`linear.html#_ones`): such a link becomes its plain code; any "
     "other fails the build.")
    ids = {str(p.relative_to(out)): {t["id"] for t in s.find_all(id=True)} for p, s in soups.items()}
    broken = []
    for page, soup in soups.items():
        rel = page.relative_to(out)
        for a in soup.find_all("a", href=re.compile(r"^[^#:?]*\.html#|^#")):
            path, anchor = a["href"].split("#", 1)
            target = os.path.normpath((rel.parent / path).as_posix()) if path else str(rel)
            if target not in ids or anchor in ids[target]:
                continue
            if len(a.contents) == 1 and getattr(a.contents[0], "name", None) == "code":  # nbdev's symbol link
                a.replace_with(a.contents[0])
            else:
                broken.append(f"{rel}: {a['href']}")
    if broken:
        raise SystemExit("build_docs: links to anchors that do not exist:\n  " + "\n  ".join(broken))


def polish_pages(out: Path, doc_url: str) -> None:
    "Polish every page, then check and fix the anchors across pages, then write them."
    shutil.copy(SITE_JS, out / "site_libs" / "minidl.js")
    soups = {p: polish_page(p, out, doc_url) for p in sorted(out.rglob("*.html"))}
    fix_anchors(out, soups)
    for page, soup in soups.items():
        page.write_text(str(soup), encoding="utf-8")
