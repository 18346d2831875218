// minidl's docs: a lightbox for figures. tools/build_docs.py copies this file to docs/site_libs/minidl.js and links
// every figure to its full-size image (a.figure-zoom); without JavaScript the link opens the image itself.
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
