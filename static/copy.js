// Copy buttons of the dashboard (loaded by base.html on every page behind log-in): a <button class="copy"
// data-copy="text"> puts its text on the clipboard and says "Copied" for two seconds (in its .copy-text part, if any;
// an aria-live status announces it). No inline handlers: the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var status = null; // the announcement, made on the first copy (a page keeps a single status region until then)

  function announce(text) {
    if (!status) {
      status = document.createElement("p");
      status.className = "visually-hidden";
      status.setAttribute("role", "status");
      document.body.appendChild(status);
    }
    status.textContent = text;
  }

  function fallback(text) {
    // browsers without the async clipboard (an http page not on localhost): a selected, off-screen textarea
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy");
    if (!button) return;
    var text = button.dataset.copy || "";
    var write = navigator.clipboard && window.isSecureContext ? navigator.clipboard.writeText(text) : fallback(text);
    var shown = button.querySelector(".copy-text") || button; // the visible words (a hidden part may name the item)
    write.then(function () {
      var label = button.dataset.label || shown.textContent;
      button.dataset.label = label;
      shown.textContent = "Copied";
      announce("Copied to the clipboard");
      setTimeout(function () { shown.textContent = label; }, 2000);
    }, function () {
      announce("Could not copy: select the text and copy it by hand");
    });
  });
})();
