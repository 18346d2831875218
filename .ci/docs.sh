#!/usr/bin/env bash
# CI's documentation check, called by .ci/run from the repository root inside the activated virtual environment
# (minidl installed with `pip install -e '.[dev]'`):
#   1. installs what the check needs and is missing: Debian's chromium + chromedriver, npm (for the pinned KaTeX), selenium;
#   2. rebuilds docs/, README.md, index_files/ and nbs/sidebar.yml from nbs/ (python tools/build_docs.py);
#   3. fails if they differ from what is committed (the committed site must be what the notebooks produce);
#   4. opens the site in headless Chromium (tests/test_docs_browser.py; see its docstring for what it checks), twice: with
#      the machine's fonts, then its layout checks again under a second font configuration (tests/fonts-alt.conf: no
#      Liberation fonts, no emoji font, so the text is set in the wider DejaVu), so that the site does not depend on the fonts.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v npm >/dev/null || missing+=(npm)
fc-list | grep -q DejaVuSans.ttf || missing+=(fonts-dejavu-core)
fc-list | grep -qi LiberationSans || missing+=(fonts-liberation2)
if ((${#missing[@]})); then
  echo "docs.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python -c "import selenium" 2>/dev/null || python -m pip install -q "selenium>=4.20"

start=$(date +%s)
python tools/build_docs.py
echo "docs.sh: docs built in $(( $(date +%s) - start ))s"

changed=$(git status --porcelain --untracked-files=all -- docs README.md index_files nbs/sidebar.yml)
if [ -n "$changed" ]; then
  echo "docs.sh: docs/ or README.md differ from what the notebooks produce;" \
       "run 'python tools/build_docs.py' and commit the result:" >&2
  echo "$changed" | head -40 >&2
  exit 1
fi

MINIDL_DOCS_BROWSER=1 python -m pytest -q -p no:cacheprovider tests/test_docs_browser.py

alt="$PWD/tests/fonts-alt.conf"
if FONTCONFIG_FILE="$alt" fc-match Arial | grep -qi liberation; then
  echo "docs.sh: tests/fonts-alt.conf does not change the fonts (fc-match Arial still gives Liberation)" >&2
  exit 1
fi
echo "docs.sh: the layout again under tests/fonts-alt.conf ($(FONTCONFIG_FILE="$alt" fc-match Arial | cut -d: -f2 | xargs), no emoji font)"
FONTCONFIG_FILE="$alt" MINIDL_DOCS_BROWSER=1 python -m pytest -q -p no:cacheprovider tests/test_docs_browser.py \
  -k "clipped or scroll or layout or table or emoji or indent or breaks or math or images"
