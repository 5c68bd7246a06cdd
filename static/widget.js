// Embeddable chat widget: <script src=".../static/widget.js" data-token="WIDGET_TOKEN" async></script>
// Adds a floating button that opens the client's chat page in an iframe.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.token) return;
  var origin = new URL(script.src).origin;
  var button = document.createElement("button");
  button.textContent = script.dataset.label || "Chat with your coach";
  button.setAttribute("aria-expanded", "false");
  button.style.cssText = "position:fixed;right:20px;bottom:20px;z-index:2147483000;padding:12px 18px;" +
    "border:0;border-radius:24px;background:#3b5bdb;color:#fff;font:15px system-ui,sans-serif;cursor:pointer;" +
    "box-shadow:0 4px 14px rgba(0,0,0,.2)";
  var frame = document.createElement("iframe");
  frame.title = "Coaching chat";
  frame.src = origin + "/w/" + encodeURIComponent(script.dataset.token);
  frame.style.cssText = "position:fixed;right:20px;bottom:76px;width:380px;max-width:calc(100vw - 40px);" +
    "height:560px;max-height:calc(100vh - 100px);border:1px solid #dde;border-radius:12px;z-index:2147483000;" +
    "display:none;background:#fff;box-shadow:0 8px 30px rgba(0,0,0,.2)";
  button.addEventListener("click", function () {
    var open = frame.style.display === "none";
    frame.style.display = open ? "block" : "none";
    button.setAttribute("aria-expanded", String(open));
  });
  document.body.appendChild(frame);
  document.body.appendChild(button);
})();
