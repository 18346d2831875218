"KaTeX from the npm package pinned in tools/katex/, copied into the site: no page loads anything from another host."

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from . import ROOT, say

PIN = ROOT / "tools" / "katex"  # package.json + package-lock.json
CDN = "https://cdn.jsdelivr.net/npm/katex@"


def katex_dist() -> Path:
    "The `dist/` folder of the pinned KaTeX: `npm ci` into a cache keyed by the lock file, once."
    lock = (PIN / "package-lock.json").read_bytes()
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
            shutil.copy(PIN / f, prefix / f)
        say(f"installing KaTeX {version} with npm ci into {prefix}")
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=prefix,
            check=True,
        )
    got = json.loads((dist.parent / "package.json").read_text())["version"]
    if got != version:
        raise SystemExit(f"build_docs: {dist} holds KaTeX {got}, the lock file pins {version}")
    return dist


def vendor_katex(out: Path) -> None:
    "Copy KaTeX's script, auto-render, stylesheet and woff2 fonts into `site_libs/katex` (woff2 is all browsers need)."
    dist, dest = katex_dist(), out / "site_libs" / "katex"
    (dest / "contrib").mkdir(parents=True)
    (dest / "fonts").mkdir()
    for f in ("katex.min.js", "contrib/auto-render.min.js"):
        shutil.copy(dist / f, dest / f)
    shutil.copy(dist.parent / "LICENSE", dest / "LICENSE")
    css = (dist / "katex.min.css").read_text(encoding="utf-8")
    (dest / "katex.min.css").write_text(re.sub(r',url\(fonts/[^)]+\.(?:woff|ttf)\) '
                                               r'format\("(?:woff|truetype)"\)', "", css), encoding="utf-8")
    for f in sorted(dist.glob("fonts/*.woff2")):
        shutil.copy(f, dest / "fonts" / f.name)


def local_css(out: Path) -> None:
    ("Bootswatch themes @import their web fonts: drop the import (the fonts fall back to the system's); "
     "refuse any other.")
    bad = []
    for css in sorted(out.rglob("*.css")):
        text = css.read_text(encoding="utf-8")
        new = re.sub(r"@import\s+url\([\"']?(?:https?:)?//[^)]*\)\s*;?", "", text)
        if new != text:
            css.write_text(new, encoding="utf-8")
        bad += [f"{css.relative_to(out)}: {m.group(0)}" for m in re.finditer(r"url\([\"']?(?:https?:)?//[^)]*\)", new)]
    if bad:
        raise SystemExit("build_docs: stylesheets load files from other hosts:\n  " + "\n  ".join(bad))
