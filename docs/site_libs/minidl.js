// minidl's docs: a lightbox for figures, and a cue on every box that scrolls sideways. tools/build_docs.py copies this
// file to docs/site_libs/minidl.js and links every figure to its full-size image (a.figure-zoom); without JavaScript
// the link opens the image itself.
// A click on a figure shows it over the page, as large as the window allows; a click on the enlarged image shows it at
// its natural size (the overlay scrolls); a click beside it, the close button or Escape closes it.
(() => {
  "use strict";
  let box = null, opener = null;

  function close() {
    if (!box) return;
    box.remove();
    box = null;
    document.documentElement.classList.remove("lightbox-open");
    if (opener) opener.focus();
  }

  function open(a) {
    close();
    opener = a;
    const src = a.querySelector("img");
    box = document.createElement("div");
    box.className = "lightbox";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-modal", "true");
    box.setAttribute("aria-label", "Enlarged figure");
    const img = document.createElement("img");
    img.src = a.getAttribute("href");
    img.alt = (src && src.alt) || "";
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "lightbox-close";
    btn.setAttribute("aria-label", "Close");
    btn.textContent = "×";
    box.append(img, btn);
    box.addEventListener("click", (e) => {
      if (e.target === img) box.classList.toggle("lightbox-natural");
      else close();
    });
    document.body.append(box);
    document.documentElement.classList.add("lightbox-open");
    btn.focus();
    // On a phone the figure already fills the column: fitting it to the window would not enlarge it, so show it at
    // its natural size at once (the overlay scrolls).
    const inline = src ? src.getBoundingClientRect().width : 0;
    const natural = () => { if (img.naturalWidth > inline * 1.1 && img.getBoundingClientRect().width < inline * 1.1) box.classList.add("lightbox-natural"); };
    if (img.complete) natural(); else img.addEventListener("load", natural, { once: true });
  }

  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a.figure-zoom");
    if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
    e.preventDefault();
    open(a);
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
})();

// Wide content (a table, a display formula, a code block with a token wider than the column) scrolls inside its own
// box. Each box that does overflow gets the class x-scrolls (styles.css draws a shadow at each edge that hides
// content) and, right after it, a "scroll →" line, hidden once the box is scrolled to its end. Checked again when the
// window or a box changes size (fonts load late, a fold opens).
(() => {
  "use strict";
  const SCROLLERS = "main .sd-table, main .x-scroll, main .math.display, main pre";
  const hintOf = (el) => (el.nextElementSibling && el.nextElementSibling.classList.contains("x-hint") ? el.nextElementSibling : null);

  function update(el) {
    const wide = el.scrollWidth > el.clientWidth + 1 && el.getClientRects().length > 0;
    el.classList.toggle("x-scrolls", wide);
    let hint = hintOf(el);
    if (wide && !hint) {
      hint = document.createElement(el.tagName === "SPAN" ? "span" : "div");
      hint.className = "x-hint";
      hint.setAttribute("aria-hidden", "true");
      hint.textContent = "scroll \u2192";
      el.after(hint);
      el.addEventListener("scroll", () => update(el), { passive: true });
    }
    if (!wide && hint) hint.remove();
    if (wide) hint.classList.toggle("x-at-end", el.scrollLeft + el.clientWidth >= el.scrollWidth - 1);
  }

  function scan() {
    const boxes = [...document.querySelectorAll(SCROLLERS)].filter((el) => !el.closest(".lightbox") && !el.parentElement.closest("pre, .math.display, .sd-table, .x-scroll"));
    boxes.forEach(update);
    return boxes;
  }

  function start() {
    const boxes = scan();
    if (window.ResizeObserver) {
      const ro = new ResizeObserver((entries) => entries.forEach((e) => update(e.target)));
      boxes.forEach((b) => ro.observe(b));
    }
    window.addEventListener("resize", scan, { passive: true });
    window.addEventListener("load", scan);
    document.addEventListener("toggle", scan, true);  // a <details> opened or closed
    if (document.fonts && document.fonts.ready) document.fonts.ready.then(scan);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
