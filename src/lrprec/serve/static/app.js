// lrprec web UI: a little progressive enhancement, no build step.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Forms marked "auto" resubmit when a select or checkbox changes.
  document.querySelectorAll("form.auto").forEach((form) => {
    form.querySelectorAll("select, input[type=checkbox]").forEach((el) => {
      el.addEventListener("change", () => {
        if (form.checkValidity()) form.submit();
      });
    });
  });
  // Mark images that failed to load (e.g. an item without an image) instead of a broken icon.
  document.querySelectorAll("img").forEach((img) => {
    const mark = () => { img.classList.add("broken"); img.title = "image could not be loaded"; };
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("loading") !== "lazy") mark();
    img.addEventListener("error", mark);
  });
});
