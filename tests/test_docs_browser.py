"""The documentation site in a real browser: open the built `docs/` in headless Chromium and check it as a reader would.

    python tools/build_docs.py && pytest tests/test_docs_browser.py      # what .ci/docs.sh runs
    python tests/test_docs_browser.py --screenshots DIR [PAGE ...]          # desktop and phone screenshots to look at

The site is served on 127.0.0.1 and every page is opened at desktop width and at phone width (390 px). Checked:
every notebook has a page and every sidebar link resolves; maths is rendered by KaTeX (no raw `$$`, `\\(`, no KaTeX
errors); images load with a non-zero size; `show_doc` cells are API blocks (heading + signature); the TOC is there;
searching "Linear" finds the Linear page; no JavaScript console errors; no request leaves the machine (and none fails);
nothing is wider than a phone screen.

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
from urllib.parse import urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS, NBS = ROOT / "docs", ROOT / "nbs"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]  # belt and braces: no other host even resolves
DESKTOP, PHONE = (1280, 900), (390, 844)
LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome:", "chrome-extension:")  # the browser's own pages, not network


def page_name(nb: str) -> str:
    "nbdev's page name for a notebook: the number prefix goes (`02_linear.ipynb` -> `linear.html`)."
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
    return sum(len(re.findall(r"^\s*show_doc\(", s, re.M)) for s in cells(nb, "code") if not re.search(r"^#\|\s*(hide|include:\s*false)", s, re.M))


# ------------------------------------------------------------------ the server and the browser


class Server:
    "Serve `docs/` on 127.0.0.1 and remember every request's path and status."

    def __init__(self, folder: Path):
        log = self.log = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a): pass

            def log_request(self, code="-", size="-"):
                log.append((self.path, int(code) if str(code).isdigit() else 0))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
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
        opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": size[0], "height": size[1], "pixelRatio": 2, "mobile": True}})
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
              && (!document.querySelector('span.math') || !!document.querySelector('span.math .katex, span.math .katex-error'))"""
    while time.time() < end and not drv.execute_script(js):
        time.sleep(0.05)


# What the page says about itself, gathered in the browser
GATHER = r"""
const main = document.querySelector('main') || document.body;
const prose = main.cloneNode(true);
prose.querySelectorAll('pre, code, .katex, script, style').forEach(e => e.remove());
const scrolls = e => { for (let a = e; a && a !== main; a = a.parentElement) { const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
const right = main.getBoundingClientRect().right;
const apis = [...main.querySelectorAll('.cell-output-markdown > h2, .cell-output-markdown > h3, .cell-output-markdown > h4')]
  .filter(h => { const n = h.nextElementSibling; return n && (n.matches('div.sourceCode, pre, .code-copy-outer-scaffold') || n.querySelector('pre')); })
  .map(h => h.textContent.trim());
return {
  title: document.title,
  sidebar: [...document.querySelectorAll('#quarto-sidebar a[href]')].map(a => a.href),
  toc: document.querySelectorAll('#TOC a').length,
  math: document.querySelectorAll('span.math').length,
  katex: document.querySelectorAll('span.math .katex').length,
  katexErrors: [...document.querySelectorAll('.katex-error')].map(e => e.getAttribute('title') || e.textContent),
  rawMath: (prose.innerText.match(/\$\$|\\\(|\\\[|\\begin\{/g) || []).length,
  rawMarkdown: (prose.innerText.match(/^```|^\|\s*-{3,}/gm) || []).length,
  images: [...document.images].map(i => ({src: i.src.slice(0, 60), w: i.naturalWidth, h: i.naturalHeight})),
  apis: apis,
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  clipped: [...main.querySelectorAll('.katex-display, table, img, svg, pre, .cell-output-display > *')]
    .filter(e => (e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > right + 1) && !scrolls(e))
    .slice(0, 3).map(e => e.tagName + '.' + (e.className.baseVal ?? e.className)),
  wide: [...main.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
          .filter(e => !e.closest('pre, .sourceCode, .katex-display, .table-responsive, .cell-output-display'))
          .slice(0, 3).map(e => e.tagName + '.' + e.className),
};
"""


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
        assert info["katex"] == info["math"], f"{page_name(nb.name)}: {info['math'] - info['katex']} formulas not rendered by KaTeX"
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
        assert len(info["apis"]) >= n, f"{page_name(nb.name)}: {n} show_doc calls but {len(info['apis'])} API blocks: {info['apis']}"
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
        hits = [a.get_attribute("href") for a in drv.find_elements("css selector", ".smalldocs-search-results a.search-result")]
        time.sleep(0.1)
    assert any(urlsplit(h).path.endswith("/linear.html") for h in hits), f"search 'Linear' found {hits[:5]}"
    first = next(a for a in drv.find_elements("css selector", ".smalldocs-search-results a.search-result") if "/linear.html" in a.get_attribute("href"))
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
                    shot = drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                                          "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
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
    want = a.pages or [p for p in ("index.html", "linear.html", "circle.html", "backprop_tutorial.html") if (DOCS / p).exists()]
    for f in screenshots(a.screenshots, want):
        print(f)
    sys.exit(0)
