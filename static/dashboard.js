// Dashboard live updates (loaded by base.html on every page behind log-in).
//
// Listens to GET /dashboard/events (Server-Sent Events of the coach's channel, see app/handoff/live.py):
//   handoff / draft -> refresh the queue (#queue), the nav badge and the open conversation's handoff panel;
//   alert           -> red crisis banner at the top of every page ("Crisis: <client> — open conversation");
//   message         -> append to the open conversation's transcript (#transcript[data-conversation]).
// The page itself was rendered from the database; the stream only carries what changes afterwards, so after
// a reconnect everything is re-fetched once. No framework: plain EventSource and fetch.
// Also: a form with data-confirm="…" asks before it is sent.
(function () {
  "use strict";
  var LABELS = { client: "Client", ai: "AI clone", human_coach: "Coach" };
  var badge = document.getElementById("handoff-badge");
  var alerts = document.getElementById("alerts");
  var live = document.getElementById("live");
  var dismissed = {};
  try { dismissed = JSON.parse(sessionStorage.getItem("oc-dismissed-alerts") || "{}"); } catch (e) { dismissed = {}; }

  // forms with data-confirm="question" (delete a client, revoke a chat link…) ask first (no inline handlers: the
  // Content-Security-Policy allows no inline script); capture phase, so htmx never sends a refused form
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);

  function transcript() { return document.getElementById("transcript"); }
  function openConversation() { var t = transcript(); return t ? t.dataset.conversation : null; }

  function replaceFrom(url, id) {
    var current = document.getElementById(id);
    if (!current) return Promise.resolve();
    return fetch(url, { credentials: "same-origin", headers: { "HX-Request": "false" } }).then(function (response) {
      if (!response.ok) return;
      return response.text().then(function (html) {
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#" + id);
        var target = document.getElementById(id);
        if (fresh && target) {
          target.replaceWith(fresh);
          if (window.htmx) window.htmx.process(fresh);
        }
      });
    }).catch(function () { /* the next event or a reload catches up */ });
  }

  function showAlert(item) {
    if (!alerts || !item.conversation_id || dismissed[item.conversation_id]) return;
    if (alerts.querySelector('[data-conversation="' + item.conversation_id + '"]')) return;
    var bar = document.createElement("div");
    bar.className = "crisis-alert";
    bar.setAttribute("role", "alert");
    bar.dataset.conversation = item.conversation_id;
    var strong = document.createElement("strong");
    strong.textContent = "Crisis: " + (item.client_name || "a client");
    var link = document.createElement("a");
    link.href = "/dashboard/conversations/" + item.conversation_id;
    link.textContent = "open conversation";
    var close = document.createElement("button");
    close.type = "button";
    close.className = "link";
    close.textContent = "Dismiss";
    close.addEventListener("click", function () {
      dismissed[item.conversation_id] = true;
      try { sessionStorage.setItem("oc-dismissed-alerts", JSON.stringify(dismissed)); } catch (e) { /* private mode */ }
      bar.remove();
    });
    bar.appendChild(strong);
    bar.appendChild(document.createTextNode(" — "));
    bar.appendChild(link);
    bar.appendChild(close);
    alerts.appendChild(bar);
  }

  function refreshSummary() {
    return fetch("/dashboard/handoffs/summary", { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) return;
      return response.json().then(function (summary) {
        if (badge) {
          badge.textContent = summary.open ? String(summary.open) : "";
          badge.hidden = !summary.open;
        }
        // crisis banners stay until the handoff is taken over (or dismissed on this tab)
        var crisis = {};
        summary.crisis.forEach(function (item) { crisis[item.conversation_id] = true; showAlert(item); });
        if (alerts) {
          Array.prototype.forEach.call(alerts.querySelectorAll(".crisis-alert"), function (bar) {
            if (!crisis[bar.dataset.conversation]) bar.remove();
          });
        }
      });
    }).catch(function () { /* offline: the badge stays as it was */ });
  }

  function refreshConversation(conversationId) {
    var open = openConversation();
    if (open && (!conversationId || conversationId === open)) {
      replaceFrom("/dashboard/conversations/" + open + "/handoff", "handoff-panel");
    }
  }

  function refreshAll() {
    refreshSummary();
    replaceFrom("/dashboard/handoffs/queue", "queue");
    refreshConversation(null);
  }

  function appendMessage(conversationId, message) {
    var list = transcript();
    if (!list || list.dataset.conversation !== conversationId) return;
    if (list.querySelector('[data-message-id="' + message.id + '"]')) return;
    var el = document.createElement("div");
    var meta = message.metadata || {};
    el.className = "msg " + message.sender_type + (meta.notice || meta.crisis ? " notice" : "");
    el.dataset.messageId = message.id;
    var who = document.createElement("div");
    who.className = "who";
    who.textContent = (LABELS[message.sender_type] || message.sender_type) + " ";
    var tag = meta.crisis ? "crisis reply" : meta.notice === "handoff" ? "handoff notice"
      : meta.notice === "sla" ? "holding message" : meta.is_handback ? "after handback" : null;
    if (tag) {
      var b = document.createElement("span");
      b.className = "badge" + (meta.crisis ? " crisis" : "");
      b.textContent = tag;
      who.appendChild(b);
      who.appendChild(document.createTextNode(" "));
    }
    var when = document.createElement("span");
    when.className = "small muted";
    when.textContent = (message.created_at || "").replace("T", " ").slice(0, 19);
    who.appendChild(when);
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = message.text;
    el.appendChild(who);
    el.appendChild(body);
    list.appendChild(el);
    el.scrollIntoView({ block: "nearest" });
  }

  function parse(event) {
    try { return JSON.parse(event.data); } catch (e) { return null; }
  }

  var connectedOnce = false;
  function connect() {
    if (!window.EventSource) return;
    var source = new EventSource("/dashboard/events");
    source.addEventListener("ready", function () {
      document.body.dataset.live = "on";
      if (live) live.classList.add("on");
      // after a reconnect, catch up on whatever happened while the stream was down
      if (connectedOnce) refreshAll(); else refreshSummary();
      connectedOnce = true;
    });
    source.addEventListener("handoff", function (event) {
      var data = parse(event);
      refreshSummary();
      replaceFrom("/dashboard/handoffs/queue", "queue");
      refreshConversation(data && data.handoff ? data.handoff.conversation_id : null);
    });
    source.addEventListener("draft", function (event) {
      var data = parse(event);
      refreshSummary();
      replaceFrom("/dashboard/handoffs/queue", "queue");
      refreshConversation(data && data.draft ? data.draft.conversation_id : null);
    });
    source.addEventListener("alert", function (event) {
      var data = parse(event);
      if (data) showAlert(data);
      refreshSummary();
    });
    source.addEventListener("message", function (event) {
      var data = parse(event);
      if (data && data.message) appendMessage(data.conversation_id, data.message);
    });
    source.onerror = function () {
      document.body.dataset.live = "off";
      if (live) live.classList.remove("on");
      // EventSource reconnects by itself (retry sent by the server); a closed one (e.g. logged out) stays closed
    };
  }

  refreshSummary();
  connect();
})();
