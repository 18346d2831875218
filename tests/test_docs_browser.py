"""The documentation site in a real browser: open the built `docs/` in headless Chromium and check it as a reader would.

    python tools/build_docs.py && pytest tests/test_docs_browser.py      # what .ci/docs.sh runs
    python tests/test_docs_browser.py --screenshots DIR [PAGE ...]          # desktop and phone screenshots to look at

The site is served on 127.0.0.1 and every page is opened at desktop width and at phone width (390 px). Checked:
every notebook has a page and every sidebar link resolves; maths is rendered by KaTeX (no raw `$$`, `\\(`, no KaTeX
errors); images load with a non-zero size; `show_doc` cells are API blocks (heading + signature); the TOC is there;
searching "Linear" finds the Linear page; no JavaScript console errors; no request leaves the machine (and none fails);
nothing is wider than a phone screen, and a table shown as cards there gives every labelled cell a line. And, on
EVERY page at both widths: a box wider than its column (a table, a display formula, a code block) scrolls inside
itself with a visible cue (a shadow and a "scroll →" line), nothing is
cut; wrapped code keeps its indentation (a continued line starts right of the line's first character) and never
breaks inside a name; previous/next links follow the sidebar's order and the footer links to the repository; every
internal link and anchor resolves; every figure links to its full-size image and a click enlarges it in a lightbox;
walls of checks are folded (the notebooks' `#| code-fold`, a summary starting `Checks`); classes show as
`class X(`; the search index
holds no raw TeX; the sidebar's sections are the book's parts, "Start here" (backpropagation from scratch) first; no
meaning is carried by emoji (a machine without an emoji font shows empty boxes); no page speaks of issues or work
sessions; reference pages fold the source except the maths (forward, backward, step) and show each signature once.

.ci/docs.sh runs this file twice: with the machine's fonts, and under a second font configuration
(tests/fonts-alt.conf: other families, no emoji font), so that the layout does not depend on the fonts.

Needs Debian's chromium and chromedriver (`apt-get install -y chromium chromium-driver`) and selenium. Without them
these tests skip, unless MINIDL_DOCS_BROWSER=1 (set by .ci/docs.sh), which makes a missing browser a failure.
"""

import functools
import http.server
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS, NBS = ROOT / "docs", ROOT / "nbs"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]  # belt and braces: no other host even resolves
DESKTOP, PHONE = (1280, 900), (390, 844)
# the browser's own pages, not network (Chromium 150 may load its new-tab page: chrome-untrusted://new-tab-page/...)
LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome:", "chrome-extension:", "chrome-untrusted:", "devtools:")


def page_name(nb: str) -> str:
    "nbdev's page name for a notebook: the number prefix goes (`10_linear.ipynb` -> `linear.html`)."
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.lower()).removesuffix(".ipynb") + ".html"


def notebooks() -> list[Path]:
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", ".")))


def cells(nb: Path, kind: str) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == kind]


def has_math(nb: Path) -> bool:
    "Whether the notebook's prose has TeX between dollars."
    return any(re.search(r"\$[^$\n]+\$", s) for s in cells(nb, "markdown"))


def shown_docs(nb: Path) -> int:
    "How many `show_doc(...)` calls the notebook shows (hidden cells do not count)."
    return sum(
        len(re.findall(r"^\s*show_doc\(", s, re.M))
        for s in cells(nb, "code")
        if not re.search(r"^#\|\s*(hide|include:\s*false)", s, re.M)
    )


# ------------------------------------------------------------------ the server and the browser


class Server:
    "Serve `docs/` on 127.0.0.1 and remember every request's path and status."

    def __init__(self, folder: Path):
        log = self.log = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a): pass

            def log_request(self, code="-", size="-"):
                log.append((self.path, int(code) if str(code).isdigit() else 0))

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def browser_missing() -> str | None:
    "Why the browser test cannot run here, or None."
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            return f"{exe} not found (apt-get install -y chromium chromium-driver)"
    return None


def make_driver(size=DESKTOP, mobile=False):
    "Headless Debian chromium through chromedriver, with a fresh profile, console and network logs."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="minidl-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in FLAGS + [f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]:
        opts.add_argument(a)
    if mobile:
        opts.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": size[0], "height": size[1], "pixelRatio": 2, "mobile": True}},
        )
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    drv.set_page_load_timeout(30)
    drv._minidl_profile = profile
    return drv


def quit_driver(drv):
    drv.quit()
    shutil.rmtree(drv._minidl_profile, ignore_errors=True)


def settle(drv, timeout=10.0):
    "Wait until the page has loaded, its images are decoded and KaTeX (if the page has maths) has run."
    end = time.time() + timeout
    js = """return document.readyState === 'complete' && [...document.images].every(i => i.complete)
              && (!document.querySelector('span.math')
                  || !!document.querySelector('span.math .katex, span.math .katex-error'))"""
    while time.time() < end and not drv.execute_script(js):
        time.sleep(0.05)


# What the page says about itself, gathered in the browser
GATHER = (Path(__file__).parent / "docs_gather.js").read_text()  # what each page reports (JavaScript)


def drain_logs(drv, origin: str):
    "Console errors and the URLs of requests that left 127.0.0.1 since the last call."
    errors = [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    remote = []
    for e in drv.get_log("performance"):
        msg = json.loads(e["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            if not url.startswith(origin) and not url.startswith(LOCAL_SCHEMES):
                remote.append(url)
    return errors, remote


def visit_all(drv, server: Server, pages: list[str]) -> dict:
    "Open each page; gather what it says about itself, its console errors and its remote requests."
    out = {}
    for p in pages:
        drv.get(server.url + p)
        settle(drv)
        info = drv.execute_script(GATHER)
        info["errors"], info["remote"] = drain_logs(drv, server.url)
        out[p] = info
    return out


# ------------------------------------------------------------------ the tests

missing = browser_missing()
if missing and os.environ.get("MINIDL_DOCS_BROWSER") != "1":
    pytest.skip(f"no browser to test the docs in: {missing}", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    assert not missing, missing
    assert (DOCS / "index.html").exists(), "docs/ is not built: python tools/build_docs.py"
    s = Server(DOCS)
    yield s
    s.close()


PAGES = [page_name(nb.name) for nb in notebooks()]


@pytest.fixture(scope="module")
def desktop(server):
    drv = make_driver(DESKTOP)
    try:
        yield visit_all(drv, server, PAGES), drv
    finally:
        quit_driver(drv)


@pytest.fixture(scope="module")
def phone(server):
    drv = make_driver(PHONE, mobile=True)
    try:
        yield visit_all(drv, server, PAGES)
    finally:
        quit_driver(drv)


def test_every_notebook_has_a_page():
    assert notebooks(), "no notebooks in nbs/"
    missing_pages = [p for p in PAGES if not (DOCS / p).exists()]
    assert not missing_pages, f"notebooks without a page in docs/: {missing_pages}"
    stray = sorted(p.name for p in DOCS.glob("*.html") if p.name not in PAGES)
    assert not stray, f"pages in docs/ without a notebook (stale build?): {stray}"


def test_sidebar_links_resolve(desktop, server):
    visits, _ = desktop
    for page, info in visits.items():
        listed = {urlsplit(h).path.lstrip("/") for h in info["sidebar"] if h.startswith(server.url)}
        assert set(PAGES) <= listed, f"{page}: sidebar lacks {sorted(set(PAGES) - listed)}"
        for href in info["sidebar"]:
            if not href.startswith(server.url):
                continue
            path = urlsplit(href).path.lstrip("/") or "index.html"
            assert (DOCS / path).is_file(), f"{page}: sidebar link {href} -> no such file"


def test_toc_on_every_page_with_sections(desktop):
    visits, _ = desktop
    sectioned = [nb for nb in notebooks() if any(re.search(r"^##\s", s, re.M) for s in cells(nb, "markdown"))]
    no_toc = [page_name(nb.name) for nb in sectioned if visits[page_name(nb.name)]["toc"] == 0]
    assert not no_toc, f"pages with ## sections but no table of contents: {no_toc}"


def test_math_is_rendered(desktop):
    visits, _ = desktop
    for nb in notebooks():
        info = visits[page_name(nb.name)]
        if has_math(nb):
            assert info["math"] > 0, f"{nb.name} has maths but its page has none"
        assert info["katex"] == info["math"], (
            f"{page_name(nb.name)}: {info['math'] - info['katex']} formulas not rendered by KaTeX"
        )
        assert not info["katexErrors"], f"{page_name(nb.name)}: KaTeX errors {info['katexErrors'][:3]}"
        assert info["rawMath"] == 0, f"{page_name(nb.name)}: raw TeX delimiters left in the text"


def test_images_load(desktop):
    visits, _ = desktop
    for page, info in visits.items():
        broken = [i for i in info["images"] if not (i["w"] > 0 and i["h"] > 0)]
        assert not broken, f"{page}: images that did not load: {broken}"


def test_show_doc_is_api_blocks(desktop):
    visits, _ = desktop
    for nb in notebooks():
        info, n = visits[page_name(nb.name)], shown_docs(nb)
        assert len(info["apis"]) >= n, (
            f"{page_name(nb.name)}: {n} show_doc calls but {len(info['apis'])} API blocks: {info['apis']}"
        )
        assert info["rawMarkdown"] == 0, f"{page_name(nb.name)}: raw Markdown (fences or table rules) in the text"


def test_search_finds_linear(desktop, server):
    _, drv = desktop
    assert "linear.html" in PAGES, "no Linear notebook yet"
    drv.get(server.url + "index.html")
    settle(drv)
    box = next(b for b in drv.find_elements("css selector", ".smalldocs-search input") if b.is_displayed())
    box.click()
    box.send_keys("Linear")
    end, hits = time.time() + 10, []
    while time.time() < end and not hits:
        hits = [
            a.get_attribute("href")
            for a in drv.find_elements("css selector", ".smalldocs-search-results a.search-result")
        ]
        time.sleep(0.1)
    assert any(urlsplit(h).path.endswith("/linear.html") for h in hits), f"search 'Linear' found {hits[:5]}"
    first = next(
        a
        for a in drv.find_elements("css selector", ".smalldocs-search-results a.search-result")
        if "/linear.html" in a.get_attribute("href")
    )
    first.click()
    end = time.time() + 10
    while time.time() < end and not urlsplit(drv.current_url).path.endswith("/linear.html"):
        time.sleep(0.05)
    assert urlsplit(drv.current_url).path.endswith("/linear.html")
    settle(drv)
    errors, remote = drain_logs(drv, server.url)
    assert not errors and not remote, (errors, remote)


def test_no_console_errors(desktop, phone):
    for visits in (desktop[0], phone):
        bad = {p: i["errors"] for p, i in visits.items() if i["errors"]}
        assert not bad, f"JavaScript console errors: {bad}"


def test_nothing_leaves_the_machine(desktop, phone, server):
    for visits in (desktop[0], phone):
        bad = {p: i["remote"] for p, i in visits.items() if i["remote"]}
        assert not bad, f"requests to other hosts: {bad}"
    failed = sorted({(p, c) for p, c in server.log if c >= 400})
    assert not failed, f"requests the site could not answer: {failed}"


def test_wide_content_scrolls(desktop, phone):
    "Formulas, tables, figures and code wider than the column scroll sideways instead of being cut or breaking out."
    for visits in (desktop[0], phone):
        bad = {p: i["clipped"] for p, i in visits.items() if i["clipped"]}
        assert not bad, f"content wider than its column that does not scroll: {bad}"


def test_phone_width_layout(phone):
    bad = {p: (i["overflow"], i["wide"]) for p, i in phone.items() if i["overflow"] > 0}
    assert not bad, f"pages wider than a {PHONE[0]}px phone (overflow px, widest elements): {bad}"


def test_phone_cards_give_every_cell_a_line(phone):
    "A table shown as cards on a phone: every cell, an empty one too, takes at least a line (its label never overlaps)."
    bad = {p: i["flatCells"] for p, i in phone.items() if i["flatCells"]}
    assert not bad, f"cells lower than a line in a phone's table cards (column, row): {bad}"


# ------------------------------------------------------------------ the book, on every page at both widths


def repository_url() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


@functools.cache
def ids_of(path: str) -> frozenset:
    "The ids (anchors) of a built page."
    return frozenset(re.findall(r'\bid="([^"]+)"', (DOCS / path).read_text(encoding="utf-8")))


def both(desktop, phone):
    return (("desktop", desktop[0]), ("phone", phone))


def test_no_clipped_output(desktop, phone):
    "Every output block, table, display formula and code block fits its box, or scrolls in it with a visible cue."
    for label, visits in both(desktop, phone):
        bad = {p: i["outputClipped"] for p, i in visits.items() if i["outputClipped"]}
        assert not bad, f"{label}: blocks wider than their box without a scroll cue: {bad}"


def test_display_maths_fits_or_scrolls_with_a_cue(phone):
    ("On a phone, the formulas too wide for the column (conv's output size, the data-parallel gradient) "
     "scroll with a cue.")
    for page in ("conv.html", "data_parallel_tutorial.html"):
        info = phone[page]
        assert info["math"] > 0, f"{page}: no maths"
        assert not info["outputClipped"], f"{page}: {info['outputClipped']}"


def test_code_never_breaks_inside_a_name(phone, desktop):
    "At phone width, code wraps at spaces and after brackets only: no identifier is cut in two."
    for label, visits in (("phone", phone), ("desktop", desktop[0])):
        bad = {p: i["midToken"] for p, i in visits.items() if i["midToken"]}
        assert not bad, f"{label}: code lines wrapped inside a name: {bad}"


def test_no_emoji(desktop):
    "No meaning is carried by emoji or dingbats (empty boxes on a machine without an emoji font): words or CSS marks."
    bad = {p: i["emoji"] for p, i in desktop[0].items() if i["emoji"]}
    assert not bad, f"emoji or dingbats in the text: {bad}"


PROJECT_LOG = re.compile(r"\((?:issues?|Issue) [0-9]+|\bissues? [0-9]+\b|in (?:the|this) session")


def test_no_project_log_on_the_site():
    "The site speaks of the library, not of the issues or work sessions that produced it."
    files = sorted(DOCS.glob("*.html")) + [ROOT / "README.md"]
    bad = {
        f.name: sorted(set(PROJECT_LOG.findall(re.sub(r"<[^>]+>", " ", f.read_text(encoding="utf-8")))))
        for f in files
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"references to issues or sessions: {bad}"


def test_start_here(desktop, server):
    ("Backpropagation from scratch is the first page after the home page, and the home page's text and the "
     "README link it.")
    order = sidebar_order(desktop[0], server)
    assert order[1] == "backprop_tutorial.html", f"the first page after the home page is {order[1]}"
    assert yaml_sidebar()[1] == {"section": "Start here", "contents": ["90_backprop_tutorial.ipynb"]}, yaml_sidebar()[1]
    home = (DOCS / "index.html").read_text(encoding="utf-8")
    text = home[home.index("<main"):home.index("</main>")]
    assert 'href="backprop_tutorial.html' in text, (
        "the home page's text does not link to backprop_tutorial.html (only the sidebar does)"
    )
    assert "backprop_tutorial.html" in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README.md does not link to the tutorial"
    )


def test_wrapped_code_keeps_its_indentation(desktop, phone):
    for label, visits in both(desktop, phone):
        bad = {p: i["indent"] for p, i in visits.items() if i["indent"]}
        assert not bad, f"{label}: wrapped lines that continue left of their first character: {bad}"


def sidebar_order(visits, server) -> list[str]:
    "The pages in the sidebar's order (the book's order), from the home page's sidebar."
    order = []
    for h in visits["index.html"]["sidebar"]:
        path = urlsplit(h).path.lstrip("/") or "index.html"
        if h.startswith(server.url) and path.endswith(".html") and path not in order:
            order.append(path)
    return ["index.html", *[p for p in order if p != "index.html"]]


def test_previous_next_in_book_order(desktop, phone, server):
    for label, visits in both(desktop, phone):
        order = sidebar_order(desktop[0], server)
        assert set(PAGES) <= set(order), f"pages missing from the sidebar: {set(PAGES) - set(order)}"
        for k, page in enumerate(order):
            info = visits[page]
            got_prev = [urlsplit(h).path.lstrip("/") for h in info["prev"]]
            got_next = [urlsplit(h).path.lstrip("/") for h in info["next"]]
            assert got_prev == ([order[k - 1]] if k else []), (
                f"{label} {page}: previous link {got_prev}, expected {order[k - 1 : k]}"
            )
            assert got_next == order[k + 1 : k + 2], (
                f"{label} {page}: next link {got_next}, expected {order[k + 1 : k + 2]}"
            )


def test_footer_links_to_the_repository(desktop):
    url = repository_url().rstrip("/")
    for page, info in desktop[0].items():
        assert any(h.rstrip("/") == url for h in info["footer"]), f"{page}: no footer link to {url}: {info['footer']}"


def test_every_internal_link_and_anchor_resolves(desktop, phone, server):
    for label, visits in both(desktop, phone):
        for page, info in visits.items():
            for href in info["links"]:
                if not href.startswith(server.url):
                    continue
                parts = urlsplit(href)
                path = parts.path.lstrip("/") or "index.html"
                if path.endswith("/"):
                    path += "index.html"
                assert (DOCS / path).is_file(), f"{label} {page}: link {href} -> no such file"
                if parts.fragment and path.endswith(".html"):
                    assert parts.fragment in ids_of(path), (
                        f"{label} {page}: link {href} -> no anchor #{parts.fragment} in {path}"
                    )


def test_figures_are_enlargeable(desktop, phone, server):
    "Every figure links to its full-size image; clicking one shows it larger in a lightbox, which Escape closes."
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for label, visits in both(desktop, phone):
        for page, info in visits.items():
            for f in info["figures"]:
                assert f["zoom"], f"{label} {page}: a figure without a link to enlarge it: {f}"
                assert (DOCS / urlsplit(f["href"]).path.lstrip("/")).is_file(), (
                    f"{label} {page}: figure link {f['href']} -> no file"
                )
                assert f["w"] <= f["nw"] + 1, (
                    f"{label} {page}: a figure shown larger than its natural size (blurred): {f}"
                )
                assert f["w"] >= min(f["nw"], info["column"]) - 2, (
                    f"{label} {page}: a figure shown smaller than it could be ({info['column']} px column): {f}"
                )
    _, drv = desktop
    pages = [p for p, i in desktop[0].items() if i["figures"]]
    assert pages, "no page has a figure"
    for page in pages:
        drv.get(server.url + page)
        settle(drv)
        for k, a in enumerate(drv.find_elements("css selector", "main a.figure-zoom")):
            drv.execute_script("window.scrollTo(0, arguments[0].getBoundingClientRect().top + window.scrollY - 120)", a)
            inline, height = drv.execute_script("const r = "
                                                "arguments[0].querySelector('img').getBoundingClientRect(); "
                                                "return [r.width, r.height]", a)
            window_h = drv.execute_script("return window.innerHeight")
            # the centre of a figure that fits the window, else near its top left (a tall figure may not fit it)
            offset = (0, 0) if height < 0.8 * window_h else (int(-inline / 2) + 20, int(-height / 2) + 20)
            shown = None
            # one retry: on a loaded machine a click can land while the page is still scrolling
            for _attempt in range(2):
                ActionChains(drv).move_to_element_with_offset(a, *offset).click().perform()
                end = time.time() + 5
                while time.time() < end and not shown:
                    shown = drv.execute_script("const i = document.querySelector('.lightbox img');return i "
                                               "&& i.complete && i.naturalWidth ? "
                                               "[i.getBoundingClientRect().width, i.naturalWidth] : null")
                    time.sleep(0.05)
                if shown: break
            assert shown, f"{page}: clicking figure {k} shows no lightbox"
            assert shown[0] >= min(inline, shown[1]) - 1, (
                f"{page}: figure {k} is not larger in the lightbox: {inline} -> {shown}"
            )
            assert urlsplit(drv.current_url).path.endswith("/" + page), f"{page}: clicking a figure left the page"
            ActionChains(drv).send_keys(Keys.ESCAPE).perform()
            assert drv.execute_script("return !document.querySelector('.lightbox')"), (
                f"{page}: Escape does not close the lightbox"
            )
    errors, remote = drain_logs(drv, server.url)
    assert not errors and not remote, (errors, remote)


def test_checks_are_folded(desktop, server):
    ("Walls of checks are folded where the notebook says so (`#| code-fold` with a summary starting "
     "`Checks`): each fold ")
    "holds checks, most start closed, and opening one shows the code."
    from selenium.webdriver.common.action_chains import ActionChains

    visits, drv = desktop
    folds = {p: i["folds"] for p, i in visits.items() if i["folds"]}
    assert folds, "no page folds its checks"
    for page, fs in folds.items():
        for f in fs:
            assert re.search(r"\b(test_\w+|assert\w*)\b", f["code"]), f"{page}: a fold of checks holds no check: {f}"
    closed = [f for fs in folds.values() for f in fs if not f["open"]]
    assert len(closed) * 2 > sum(map(len, folds.values())), "most walls of checks are not folded"
    page = next(p for p, fs in folds.items() if any(not f["open"] for f in fs))
    drv.get(server.url + page)
    settle(drv)
    d = next(d for d in drv.find_elements("css selector", "main details.code-fold:not([open])")
             if d.find_element("css selector", "summary").get_attribute("textContent").strip().startswith("Checks"))
    code = d.find_element("css selector", "pre code")
    assert not code.is_displayed()
    summary = d.find_element("css selector", "summary")
    drv.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", summary)  # not smoothly
    ActionChains(drv).move_to_element(summary).click().perform()
    assert code.is_displayed() and any(w in code.text for w in ("test", "assert")), (
        f"{page}: opening a fold shows no checks"
    )


MATH_CODE = re.compile(r"^\s*def\s+(?:\w*forward\w*|\w*backward\w*|step)\s*\(", re.M)


def test_exported_source_on_the_page(desktop):
    ("A notebook's `#| exports` cells show their code on its page (nbdev's fold): open where it is the maths "
     "of the page ")
    "(a forward, a backward, a step), under its derivation; folded otherwise. A card whose definition is open above it "
    "does not repeat its signature."
    visits, _ = desktop
    opened = 0
    for nb in notebooks():
        n = sum(bool(re.search(r"^#\|\s*exports\s*$", s, re.M)) for s in cells(nb, "code"))
        info = visits[page_name(nb.name)]
        shown = [f for f in info["sources"] if f["summary"].startswith("Source")]
        assert len(shown) >= n, f"{page_name(nb.name)}: {n} exports cells, {len(shown)} source blocks"
        for f in shown:
            maths = bool(MATH_CODE.search(f["code"]))
            assert f["open"] == maths, (
                f"{page_name(nb.name)}: a source block {'with' if maths else 'without'} forward/backward is "
                f"{'folded' if maths else 'open'}: {f['code'][:80]}"
            )
            opened += maths
        assert all(d for d in info["defined"]), f"{page_name(nb.name)}: a signature-less card without a heading"
    assert opened, "no page shows a forward or backward"
    assert (
        "Linear" in visits["linear.html"]["defined"] and "Linear.backward" in visits["linear.html"]["defined"]
    ), visits["linear.html"]["defined"]


def test_classes_are_classes(desktop):
    for page, info in desktop[0].items():
        bad = [s for s in info["signatures"] if re.match(r"def [A-Z]\w*\(", s)]
        assert not bad, f"{page}: classes documented as functions: {bad}"


def test_home_results_table_shows_every_column(desktop, phone):
    "The home page's results table shows all its columns, the test accuracy and the report's included, at both widths."
    for label, visits in both(desktop, phone):
        tables = [t for t in visits["index.html"]["tableCells"] if "report" in t["heads"]]
        assert tables, f"{label}: no results table (with a 'report' column) on the home page"
        for t in tables:
            assert any(h.startswith("test acc") for h in t["heads"]), t["heads"]
            hidden = [c["head"] for c in t["cells"] if not c["shown"]]
            assert not hidden, f"{label}: columns of the results table not shown: {hidden}"
            assert len(t["cells"]) == len(t["heads"]), t


def test_no_table_cell_outside_its_page(desktop, phone):
    "Every table cell is inside the text column, unless its table scrolls in its own box with the cue."
    for label, visits in both(desktop, phone):
        bad = {
            p: [c["head"] for t in i["tableCells"] if not t["scrolls"] for c in t["cells"] if not c["shown"]]
            for p, i in visits.items()
        }
        bad = {p: v for p, v in bad.items() if v}
        assert not bad, f"{label}: table cells outside the text column: {bad}"


def test_docstring_maths_is_rendered(desktop):
    "show_doc's docstrings show `dL/dW = G^T X` as maths, not as ASCII."
    for page, info in desktop[0].items():
        bad = [d for d in info["docstrings"] if re.search(r"\bd[A-Z]/d\w|\b[A-Z]\^T\b", d)]
        assert not bad, f"{page}: ASCII maths in docstrings: {bad}"


def test_search_index_has_no_raw_tex():
    entries = json.loads((DOCS / "search.json").read_text(encoding="utf-8"))
    bad = [
        (e["href"], m.group(0))
        for e in entries
        for m in re.finditer(
            r"\\(?:partial|text|frac|top|math\w+|sum|sqrt|epsilon|varepsilon|cdot|left|right|begin)\b",
            e["text"],
        )
    ]
    assert not bad, f"raw TeX in search snippets: {bad[:5]}"


def test_sidebar_sections_are_the_books_parts():
    sb = yaml_sidebar()
    titles = [e["section"] for e in sb if isinstance(e, dict)]
    parts = [
        "Start here",
        "Part I · Foundations",
        "Part II · Layers — minidl.nn",
        "Part III · Optimisation and training",
        "Part IV · Experiments",
        "Part V · Scale",
        "Tutorials",
        "Performance",
    ]
    assert titles == [t for t in parts if t in titles], f"sections {titles} not in the book's order {parts}"
    assert "Part I · Foundations" in titles
    for e in sb:
        if isinstance(e, dict) and len(e["contents"]) == 1:
            nb = NBS / e["contents"][0]
            first = next((s for s in cells(nb, "markdown")), "")
            m = re.search(r"^#\s+(.+?)\s*$", first, re.M)
            assert not (m and m.group(1).lower() == e["section"].lower()), (
                f"redundant sidebar entry {e['section']} > {m.group(1)}"
            )


def yaml_sidebar() -> list:
    import yaml

    return yaml.safe_load((NBS / "sidebar.yml").read_text(encoding="utf-8"))["website"]["sidebar"]["contents"]


# ------------------------------------------------------------------ screenshots, to look at


def screenshots(folder: Path, pages: list[str]) -> list[Path]:
    "Save a full-page PNG of each page at desktop and at phone width; return their paths."
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    server, shots = Server(DOCS), []
    try:
        for label, size, mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
            drv = make_driver(size, mobile)
            try:
                for p in pages:
                    drv.get(server.url + p)
                    settle(drv)
                    h = drv.execute_script("return document.documentElement.scrollHeight")
                    w = drv.execute_script("return document.documentElement.clientWidth")
                    shot = drv.execute_cdp_cmd(
                        "Page.captureScreenshot",
                        {
                            "format": "png",
                            "captureBeyondViewport": True,
                            "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
                        },
                    )
                    f = folder / f"{p.removesuffix('.html')}-{label}.png"
                    f.write_bytes(base64.b64decode(shot["data"]))
                    shots.append(f)
            finally:
                quit_driver(drv)
    finally:
        server.close()
    return shots


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Screenshots of the built site at desktop and phone width.")
    ap.add_argument("--screenshots", type=Path, required=True, help="folder for the PNGs")
    ap.add_argument("pages", nargs="*", help="pages such as index.html linear.html (default: index, linear, circle)")
    a = ap.parse_args()
    want = a.pages or [
        p
        for p in ("index.html", "linear.html", "circle.html", "backprop_tutorial.html")
        if (DOCS / p).exists()
    ]
    for f in screenshots(a.screenshots, want):
        print(f)
    sys.exit(0)
