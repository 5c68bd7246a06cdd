// Embeddable chat widget: <script src=".../static/widget.js" data-token="WIDGET_TOKEN" async></script>
// Adds a floating launcher that opens the client's chat page in an iframe. Open, the launcher is a close button;
// closed, it counts the replies that arrived meanwhile (unread badge). The panel remembers whether it was open
// (localStorage of the embedding page). On a phone (max-width 480px) the open panel fills the screen and the
// chat's own close button (or Esc) closes it. The chat page talks to this script with postMessage
// {type: "opencoach:close" | "opencoach:message" | "opencoach:texts"}; only messages from the chat's origin and
// frame count. Opening the panel asks the chat to focus its message input ({type: "opencoach:focus"}).
// The launcher speaks the chat page's language: the frame asks for the embedding page's (the
// snippet's data-language, else <html lang>; the server falls back on the browser's), and once loaded tells the
// launcher its texts (app.handoff.catalogue widget_launcher, widget_close, widget_unread, widget_frame); English
// until then, and the snippet's own data-label stays. The launcher shows once the chat page has said its texts: a
// site the coach did not allow (widget_allowed_origins) cannot frame the chat (frame-ancestors), and showed a
// launcher opening a grey "refused to connect" panel; it now shows nothing, and the console says why.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.token) return;
  var origin = new URL(script.src).origin;
  var texts = {  // English until the chat page says its texts
    launcher: "Chat with your coach", close: "Close chat", unread: "{count} unread", frame: "Coaching chat"
  };
  var language = script.dataset.language || document.documentElement.lang || "";
  var storeKey = "opencoach-widget-open";
  var phone = window.matchMedia("(max-width: 480px)");
  var unread = 0;
  var button = document.createElement("button");
  button.type = "button";
  button.style.cssText = "position:fixed;right:20px;bottom:20px;z-index:2147483001;min-height:48px;padding:12px 18px;" +
    "border:0;border-radius:24px;background:#3b5bdb;color:#fff;font:16px system-ui,sans-serif;cursor:pointer;" +
    "box-shadow:0 4px 14px rgba(0,0,0,.2);display:flex;align-items:center;gap:8px";
  var text = document.createElement("span");
  var badge = document.createElement("span");
  badge.style.cssText = "display:none;min-width:22px;padding:0 6px;border-radius:11px;background:#fff;color:#b02525;" +
    "font-weight:700;font-size:14px;line-height:22px;text-align:center";
  button.appendChild(text);
  button.appendChild(badge);
  var frame = document.createElement("iframe");
  frame.title = texts.frame;
  frame.src = origin + "/w/" + encodeURIComponent(script.dataset.token) +
    (language ? "?lang=" + encodeURIComponent(language) : "");
  frame.allow = "clipboard-write";

  var opened = false;
  var ready = false;  // the chat page said its texts: this site may show it

  function isOpen() { return opened; }

  function layout(open) {
    var full = phone.matches;
    opened = open;
    frame.style.cssText = full
      ? "position:fixed;inset:0;width:100%;height:100%;border:0;border-radius:0;z-index:2147483000;background:#fff"
      : "position:fixed;right:20px;bottom:80px;width:380px;max-width:calc(100vw - 40px);height:560px;" +
        "max-height:calc(100vh - 100px);border:1px solid #dde;border-radius:12px;z-index:2147483000;background:#fff;" +
        "box-shadow:0 8px 30px rgba(0,0,0,.2)";
    frame.style.display = open && ready ? "block" : "none";
    button.style.display = !ready || (open && full) ? "none" : "flex";  // full screen: the chat's own close button
  }

  function render() {
    var open = isOpen();
    var label = script.dataset.label || texts.launcher;
    text.textContent = open ? "\u00d7 " + texts.close : label;
    button.setAttribute("aria-expanded", String(open));
    var count = unread ? " (" + texts.unread.replace("{count}", String(unread)) + ")" : "";
    button.setAttribute("aria-label", open ? texts.close : label + count);
    badge.textContent = String(unread);
    badge.style.display = !open && unread ? "inline-block" : "none";
  }

  function setOpen(open) {
    layout(open);
    if (open) unread = 0;
    try { localStorage.setItem(storeKey, open ? "1" : "0"); } catch { /* storage blocked: not remembered */ }
    render();
    if (open) {  // the chat's message input, not the frame's body (chat.js focuses it)
      frame.focus();
      frame.contentWindow.postMessage({ type: "opencoach:focus" }, origin);
    } else button.focus();
  }

  button.addEventListener("click", function () { setOpen(!isOpen()); });
  window.addEventListener("message", function (event) {
    if (event.origin !== origin || event.source !== frame.contentWindow || !event.data) return;
    if (event.data.type === "opencoach:close" && isOpen()) setOpen(false);
    else if (event.data.type === "opencoach:message" && !isOpen()) { unread += 1; render(); }
    else if (event.data.type === "opencoach:texts" && event.data.texts) {
      Object.keys(texts).forEach(function (name) {
        if (typeof event.data.texts[name] === "string") texts[name] = event.data.texts[name];
      });
      frame.title = texts.frame;
      ready = true;
      layout(opened);
      render();
    }
  });
  setTimeout(function () {
    if (!ready) console.warn("OpenCoach: the chat did not load on this page. Is " + location.origin +
      " among the coach's allowed widget origins (Settings)?");
  }, 15000);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && isOpen()) setOpen(false);
  });
  phone.addEventListener("change", function () { layout(isOpen()); });
  var remembered = null;
  try { remembered = localStorage.getItem(storeKey); } catch { /* storage blocked */ }
  layout(remembered === "1");
  render();
  function mount() {
    document.body.appendChild(frame);
    document.body.appendChild(button);
  }
  // a snippet pasted in <head> can run before <body> exists
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
