// Dashboard live updates (loaded by base.html on every page behind log-in).
//
// Listens to GET /dashboard/events (Server-Sent Events of the coach's channel, see app/handoff/live.py):
//   handoff / draft -> refresh the queue (#queue), the nav badge and the open conversation's handoff panel;
//   alert           -> red crisis banner at the top of every page ("Crisis: <client> — open conversation"), for
//                      a new crisis handoff and for each crisis message inside a handoff already open or held;
//   message         -> append to the open conversation's transcript (#transcript[data-conversation]).
// An AI reply's Markdown shows formatted, as the client sees it (static/markdown.js), on the page and in what htmx
// or a live message adds.
// Every event is also re-dispatched on document as "oc:live" ({type, data}) for page scripts (static/inbox.js).
// Alerts a coach notices, for a new handoff or crisis: the tab title counts open handoffs ("(2) Inbox ·
// OpenCoach"); with alerts turned on (#alerts-toggle: a click, so the browser lets the page ask for the
// Notification permission and play sound) a short tone (Web Audio; two for a crisis) and a browser notification:
// once per new handoff (its id) and once per crisis message (the alert's message_id; a crisis handoff's own
// handoff event leaves it to its alert), so a crisis in a conversation the coach already holds still rings.
// The page itself was rendered from the database; the stream only carries what changes afterwards, so after
// a reconnect everything is re-fetched once. No framework: plain EventSource and fetch.
// Also: a form with data-confirm="…" asks before it is sent.
(function () {
  "use strict";
  var LABELS = { client: "Client", ai: "AI clone", human_coach: "Coach" };
  var badge = document.getElementById("handoff-badge");
  var alerts = document.getElementById("alerts");
  var live = document.getElementById("live");
  var alertsToggle = document.getElementById("alerts-toggle");
  var baseTitle = document.title;
  var announced = {};
  var audio = null;
  var dismissed = {};
  try { dismissed = JSON.parse(sessionStorage.getItem("oc-dismissed-alerts") || "{}"); } catch { dismissed = {}; }

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
      try { sessionStorage.setItem("oc-dismissed-alerts", JSON.stringify(dismissed)); } catch { /* private mode */ }
      bar.remove();
    });
    bar.appendChild(strong);
    bar.appendChild(document.createTextNode(" — "));
    bar.appendChild(link);
    bar.appendChild(close);
    alerts.appendChild(bar);
  }

  // live events can start several refreshes at once, and their answers may come back out of order: only the
  // answer of the latest refresh is shown (an older one would put back a count the coach has already cleared)
  var summaryRequests = 0;

  function refreshSummary() {
    var request = ++summaryRequests;
    return fetch("/dashboard/handoffs/summary", { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) return;
      return response.json().then(function (summary) {
        if (request !== summaryRequests) return;
        if (badge) {
          badge.textContent = summary.open ? String(summary.open) : "";
          badge.hidden = !summary.open;
        }
        document.title = summary.open ? "(" + summary.open + ") " + baseTitle : baseTitle;
        // crisis banners stay while the inbox shows the conversation as crisis: until an open crisis handoff is
        // taken over, or the coach read a crisis message in a conversation they hold (or dismissed on this tab)
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
      : meta.notice === "sla" ? "holding message" : meta.notice === "crisis" ? "crisis acknowledgement"
      : meta.is_handback ? "after handback" : null;
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
    window.renderMarkdown(el);
    list.appendChild(el);
    list.scrollTop = list.scrollHeight;
  }

  function renderReplies(root) {
    // the AI replies shown in `root` (the page, or what htmx just put in it) with their Markdown formatted
    Array.prototype.forEach.call(root.querySelectorAll(".msg.ai"), function (el) { window.renderMarkdown(el); });
  }

  function parse(event) {
    var data;
    try { data = JSON.parse(event.data); } catch { data = null; }
    document.dispatchEvent(new CustomEvent("oc:live", { detail: { type: event.type, data: data } }));
    return data;
  }

  // --- alerts: sound and browser notifications, only after the coach turned them on with a click
  function alertsOn() {
    try { return localStorage.getItem("oc-alerts") === "on"; } catch { return false; }
  }

  function showToggle() {
    if (!alertsToggle) return;
    var on = alertsOn();
    alertsToggle.textContent = on ? "Alerts on" : "Turn on alerts";
    alertsToggle.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function unlockAudio() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!audio) audio = new Ctx();
    if (audio.state === "suspended") audio.resume();
  }

  function tone(times) {
    if (!audio) unlockAudio();
    if (!audio || audio.state !== "running") return;
    for (var i = 0; i < times; i++) {
      var start = audio.currentTime + i * 0.3;
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.2, start);
      gain.gain.exponentialRampToValueAtTime(0.001, start + 0.25);
      osc.connect(gain).connect(audio.destination);
      osc.start(start);
      osc.stop(start + 0.25);
    }
  }

  function notify(key, title, body, conversationId, urgent) {
    if (!key || announced[key]) return;  // an event seen twice (e.g. after a reconnect): one notice
    announced[key] = true;
    if (!alertsOn()) return;
    tone(urgent ? 2 : 1);
    if (!window.Notification || Notification.permission !== "granted") return;
    var notice = new Notification(title, { body: body, tag: key, requireInteraction: !!urgent });
    notice.onclick = function () {
      window.focus();
      if (conversationId) window.location.href = "/dashboard/inbox?conversation=" + conversationId;
      notice.close();
    };
  }

  if (alertsToggle) {
    alertsToggle.hidden = false;
    showToggle();
    alertsToggle.addEventListener("click", function () {
      var on = !alertsOn();
      try { localStorage.setItem("oc-alerts", on ? "on" : "off"); } catch { /* private mode */ }
      if (on) {
        unlockAudio();
        if (window.Notification && Notification.permission === "default") Notification.requestPermission();
      }
      showToggle();
    });
    // browsers start audio only after a gesture on the page: any click unlocks it when alerts are on
    document.addEventListener("click", function () { if (alertsOn()) unlockAudio(); }, { once: true });
  }

  var connectedOnce = false;
  function connect() {
    if (!window.EventSource) return;
    var source = new EventSource("/dashboard/events");
    source.addEventListener("ready", function (event) {
      parse(event);
      document.body.dataset.live = "on";
      if (live) live.classList.add("on");
      // after a reconnect, catch up on whatever happened while the stream was down
      if (connectedOnce) refreshAll(); else refreshSummary();
      connectedOnce = true;
    });
    source.addEventListener("handoff", function (event) {
      var data = parse(event);
      var h = data && data.handoff;
      if (h && h.status === "open" && h.reason !== "crisis") {  // a crisis rings with its alert event
        notify(h.id, "Handoff: " + (h.client_name || "a client"), h.reason_label || "", h.conversation_id, false);
      }
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
      if (data) {
        delete dismissed[data.conversation_id];  // a new crisis message shows the banner again
        showAlert(data);
        notify(data.message_id ? "crisis:" + data.message_id : data.handoff_id,
          "Crisis: " + (data.client_name || "a client"), data.detail_text || data.detail || "", data.conversation_id, true);
      }
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
  renderReplies(document);
  document.body.addEventListener("htmx:afterSettle", function (event) { renderReplies(event.target); });
})();
