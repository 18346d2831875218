// What tests/test_docs_browser.py reads from each page (returned to Python as one object).
// Wrapped code whose continued lines start left of the first character of their line (the indentation is lost).
function badIndent(root) {
  const bad = [];
  for (const code of root.querySelectorAll('pre > code')) {
    if (!code.getClientRects().length) continue;  // in a closed fold
    const lines = code.querySelectorAll(':scope > .ln');
    const lh = code.querySelector('.ln') ? null : parseFloat(getComputedStyle(code).lineHeight);
    if (!lines.length) {  // code without line wrappers may not wrap at all
      const n = code.textContent.split('\n').length;
      if (getComputedStyle(code).whiteSpace !== 'pre' && lh && code.getBoundingClientRect().height > (n + 0.5) * lh) bad.push('wraps without line wrappers: ' + code.textContent.slice(0, 40));
      continue;
    }
    for (const ln of lines) {
      if (parseInt(ln.style.getPropertyValue('--i') || '0') > 24) continue;  // far-right continuations hang at 28 columns
      const all = document.createRange(); all.selectNodeContents(ln);
      const rects = [...all.getClientRects()].filter(q => q.width > 0);
      if (!rects.length) continue;
      const top0 = Math.min(...rects.map(q => q.top)), h = Math.min(...rects.map(q => q.height));
      const cont = rects.filter(q => q.top > top0 + h / 2);
      if (!cont.length) continue;  // one visual line
      const w = document.createTreeWalker(ln, NodeFilter.SHOW_TEXT); let node, x0 = null;
      while ((node = w.nextNode())) { const i = node.data.search(/\S/); if (i >= 0) { const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1); x0 = r.getBoundingClientRect().left; break; } }
      if (x0 !== null && Math.min(...cont.map(q => q.left)) < x0 + 1) bad.push(ln.textContent.slice(0, 60));
    }
  }
  return bad;
}
// Code lines that wrap inside a name (`loss_fn.ba` / `ckward()`): a row break with word characters on both sides.
function midToken(root) {
  const bad = [], word = /[A-Za-z0-9_]/;
  for (const ln of root.querySelectorAll('pre > code > .ln')) {
    if (!ln.getClientRects().length) continue;
    const lh = parseFloat(getComputedStyle(ln).lineHeight) || 16;
    if (ln.getBoundingClientRect().height < 1.5 * lh) continue;  // one row
    const chars = [];
    const w = document.createTreeWalker(ln, NodeFilter.SHOW_TEXT); let node;
    while ((node = w.nextNode())) for (let i = 0; i < node.data.length; i++) chars.push([node, i]);
    let prevTop = null, prevCh = '';
    for (const [n, i] of chars) {
      const ch = n.data[i];
      if (ch === '\n') continue;
      const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
      const q = [...r.getClientRects()].find(x => x.width > 0);
      if (!q) continue;
      if (prevTop !== null && q.top > prevTop + lh / 2 && word.test(prevCh) && (word.test(ch) || ch === '.'))
        bad.push(ln.textContent.slice(0, 60));
      if (prevTop !== null && q.top > prevTop + lh / 2 && prevCh === '.' && word.test(ch)) bad.push(ln.textContent.slice(0, 60));
      prevTop = q.top; prevCh = ch;
    }
  }
  return [...new Set(bad)];
}
// Boxes wider than their column: each must scroll in itself, with the cue (class x-scrolls: the edge shadows, and a
// visible "scroll →" line right after it).
function uncued(root) {
  const bad = [];
  for (const e of root.querySelectorAll('.sd-table, .x-scroll, .math.display, pre, table, .cell-output-display > *')) {
    if (!e.getClientRects().length || e.closest('.lightbox') || e.classList.contains('x-hint')) continue;
    if (e.scrollWidth <= e.clientWidth + 1) continue;
    const o = getComputedStyle(e).overflowX, hint = e.nextElementSibling;
    const cued = (o === 'auto' || o === 'scroll') && e.classList.contains('x-scrolls') && getComputedStyle(e).backgroundImage.includes('gradient')
      && hint && hint.classList.contains('x-hint') && hint.getClientRects().length && /scroll/.test(hint.textContent);
    if (!cued) bad.push(e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 40));
  }
  return bad;
}
const main = document.querySelector('main') || document.body;
const prose = main.cloneNode(true);
prose.querySelectorAll('pre, code, .katex, script, style').forEach(e => e.remove());
const scrolls = e => { for (let a = e; a && a !== main; a = a.parentElement) { const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
const right = main.getBoundingClientRect().right;
const apis = [...main.querySelectorAll('.cell-output-markdown > h2, .cell-output-markdown > h3, .cell-output-markdown > h4')]
  .filter(h => { const n = h.nextElementSibling; return n && (n.matches('div.sourceCode, pre, .code-copy-outer-scaffold, p.api-defined-above') || n.querySelector('pre')); })
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
  outputClipped: uncued(main).slice(0, 3),
  scrolling: [...main.querySelectorAll('.x-scrolls')].map(e => e.tagName + '.' + e.className.replace(' x-scrolls', '') + ': ' + e.textContent.slice(0, 30)),
  midToken: midToken(main).slice(0, 3),
  emoji: (main.innerText.match(/[\u2600-\u27BF\u2B00-\u2BFF\uFE0F]|[\uD83C-\uD83E][\uDC00-\uDFFF]/g) || []).slice(0, 5),
  defined: [...main.querySelectorAll('p.api-defined-above')].map(p => p.previousElementSibling ? p.previousElementSibling.textContent.trim() : ''),
  indent: badIndent(main).slice(0, 3),
  prev: [...document.querySelectorAll('nav.page-navigation .nav-page-previous a')].map(a => a.href),
  next: [...document.querySelectorAll('nav.page-navigation .nav-page-next a')].map(a => a.href),
  footer: [...document.querySelectorAll('footer.footer a[href]')].map(a => a.href),
  links: [...new Set([...document.querySelectorAll('a[href]')].map(a => a.href))],
  column: main.clientWidth - parseFloat(getComputedStyle(main).paddingLeft) - parseFloat(getComputedStyle(main).paddingRight),
  figures: [...main.querySelectorAll('img')].map(i => ({zoom: !!i.closest('a.figure-zoom'), href: (i.closest('a.figure-zoom') || {}).href || '',
                                                       w: i.getBoundingClientRect().width, nw: i.naturalWidth})),
  folds: [...main.querySelectorAll('details.code-fold')].filter(d => d.querySelector('summary').textContent.trim().startsWith('Checks'))
    .map(d => ({open: d.open, summary: d.querySelector('summary').textContent.trim(), code: (d.querySelector('code') || {}).textContent || ''})),
  sources: [...main.querySelectorAll('details.code-fold')].map(d => ({open: d.open, summary: d.querySelector('summary').textContent.trim(),
                                                                    code: (d.querySelector('code') || {}).textContent || ''})),
  tableCells: [...main.querySelectorAll('table')].map(t => {
    const heads = [...t.querySelectorAll('thead th')].map(h => h.textContent.trim());
    const row = t.querySelector('tbody tr');
    return {heads: heads, scrolls: !!t.closest('.x-scrolls'), cells: row ? [...row.children].map((c, k) => { const r = c.getBoundingClientRect();
      return {head: heads[k], label: c.getAttribute('data-label'), shown: r.width > 0 && r.height > 0 && r.left >= right - main.clientWidth - 1 && r.right <= right + 1}; }) : []};
  }),
  docstrings: [...main.querySelectorAll('.cell-output-markdown p > em')].map(e => { const c = e.cloneNode(true);
    c.querySelectorAll('.katex, code').forEach(k => k.remove()); return c.textContent; }),
  signatures: [...main.querySelectorAll('.cell-output-markdown pre code')].map(c => c.textContent.split('\n')[0]),
  // labelled cells of a table shown as cards (a phone) lower than one line of text: the label would overlap the next
  flatCells: [...main.querySelectorAll('table.stack > tbody > tr > td[data-label]:not([data-label=""])')]
    .filter(c => c.getClientRects().length && getComputedStyle(c).display !== 'table-cell'
                 && c.getBoundingClientRect().height < 0.8 * (parseFloat(getComputedStyle(c).lineHeight) || 16))
    .slice(0, 3).map(c => c.getAttribute('data-label') + ' in a row of ' + c.parentElement.textContent.trim().slice(0, 40)),
  wide: [...main.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
          .filter(e => !e.closest('pre, .sourceCode, .katex-display, .table-responsive, .cell-output-display'))
          .slice(0, 3).map(e => e.tagName + '.' + e.className),
};
