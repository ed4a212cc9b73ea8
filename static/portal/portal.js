// Small behaviours of the portal; htmx does the inline edits.
(function () {
  "use strict";

  // An inline edit that failed (the link was deleted meanwhile, the session ended) must not
  // fail silently: say so where flash messages appear.
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    var text = status === 404
      ? "That item no longer exists. Reload the page to see the current state."
      : "The change could not be saved (" + (status || "no answer") + "). Reload the page and try again.";
    showFlash(text);
  });
  document.addEventListener("htmx:sendError", function () {
    showFlash("The server could not be reached. Check your connection and try again.");
  });

  function showFlash(text) {
    var content = document.querySelector(".content");
    if (!content) return;
    var box = content.querySelector(".flashes");
    if (!box) {
      box = document.createElement("div");
      box.className = "flashes";
      content.insertBefore(box, content.firstChild);
    }
    var flash = document.createElement("div");
    flash.className = "flash flash-error";
    flash.setAttribute("role", "alert");
    flash.textContent = text;
    box.appendChild(flash);
  }

  // Escape closes an open contact picker (its Cancel button).
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var picker = event.target.closest && event.target.closest("form.picker");
    var cancel = picker && picker.querySelector("button[name=cancel]");
    if (cancel) cancel.click();
  });
})();
