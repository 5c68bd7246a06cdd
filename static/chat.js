// Widget page: sends the client's messages over the /ws/chat WebSocket and renders streamed replies.
// Live events of the client's channel arrive on the same socket: the coach's messages ("message"),
// "coach_joined" and "coach_left"; a turn answered by nobody (the coach holds the conversation, or a draft
// waits for review) ends with `done` whose message_id is null and whose `handoff` says why.
// Every reply of the AI or the coach (not notices or crisis replies) gets thumbs up / down, then an optional
// 1–5 rating and comment: POST /api/v1/messages/{id}/feedback; a new choice replaces the previous one.
(function () {
  "use strict";
  var LABELS = { client: "You", ai: "AI assistant", human_coach: "Coach" };
  var log = document.getElementById("log");
  var presence = document.getElementById("presence");
  var humanButton = document.getElementById("human");
  var coachName = log.dataset.coach || "Your coach";
  var form = document.getElementById("composer");
  var input = document.getElementById("text");
  var sendButton = document.getElementById("send");
  var endButton = document.getElementById("end-session");
  var statusLine = document.getElementById("status");
  var token = log.dataset.token;
  var conversationId = log.dataset.conversation || null;
  var socket = null;
  var current = null;   // the AI message element being streamed into
  var queue = [];

  function setPresence(text, waiting) {
    presence.textContent = text || "";
    presence.className = "presence small" + (waiting ? " waiting" : "");
  }

  function systemLine(text) {
    var el = document.createElement("div");
    el.className = "sys";
    el.textContent = text;
    log.appendChild(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  function showHandoff(handoff) {
    if (!handoff) return;
    if (handoff.status === "draft_pending") setPresence("Your coach is reviewing the reply…", true);
    else if (handoff.status === "open") setPresence("Waiting for " + coachName + "…", true);
    else if (handoff.status === "claimed") setPresence(coachName + " is in the conversation", false);
  }

  function hasMessage(id) {
    return !!(id && log.querySelector('[data-message-id="' + id + '"]'));
  }

  function bubble(kind, label, text) {
    var el = document.createElement("div");
    el.className = "msg " + kind;
    var who = document.createElement("div");
    who.className = "who";
    who.textContent = label;
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    el.appendChild(who);
    el.appendChild(body);
    log.appendChild(el);
    log.scrollTop = log.scrollHeight;
    return el;
  }

  function sendFeedback(id, body) {
    return fetch("/api/v1/messages/" + encodeURIComponent(id) + "/feedback", {
      method: "POST",
      headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) {
        return response.json().then(function (err) { throw new Error(err.detail || "Could not save your feedback."); });
      }
      return response.json();
    });
  }

  function feedbackBar(el, rated) {
    var id = el.dataset.messageId;
    if (!id || el.classList.contains("notice") || el.querySelector(".feedback")) return;
    var bar = document.createElement("div");
    bar.className = "feedback small";
    var helpful = rated === "up" ? true : rated === "down" ? false : null;
    function thumb(value, glyph, label) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "thumb " + (value ? "up" : "down");
      b.textContent = glyph;
      b.title = label;
      b.setAttribute("aria-label", label);
      b.setAttribute("aria-pressed", String(helpful === value));
      b.addEventListener("click", function () { choose(value); });
      bar.appendChild(b);
      return b;
    }
    var up = thumb(true, "👍", "Helpful");
    var down = thumb(false, "👎", "Not helpful");
    var more = document.createElement("form");
    more.className = "feedback-more";
    more.hidden = true;
    var rating = document.createElement("select");
    rating.name = "rating";
    rating.setAttribute("aria-label", "Rating from 1 to 5");
    ["Rate 1–5", "1", "2", "3", "4", "5"].forEach(function (label, i) {
      var option = document.createElement("option");
      option.value = i ? String(i) : "";
      option.textContent = i ? label + " ★" : label;
      rating.appendChild(option);
    });
    var comment = document.createElement("input");
    comment.name = "text";
    comment.maxLength = 2000;
    comment.placeholder = "Anything to add? (optional)";
    var submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Send";
    more.appendChild(rating);
    more.appendChild(comment);
    more.appendChild(submit);
    var note = document.createElement("span");
    note.className = "muted";
    bar.appendChild(more);
    bar.appendChild(note);
    function show(value) {
      helpful = value;
      up.setAttribute("aria-pressed", String(value === true));
      down.setAttribute("aria-pressed", String(value === false));
    }
    function choose(value) {
      sendFeedback(id, { helpful: value }).then(function () {
        show(value);
        more.hidden = false;
        note.textContent = value ? "Thanks!" : "Thanks — what was missing?";
      }).catch(function (err) { note.textContent = err.message; });
    }
    more.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = { helpful: helpful !== false };
      if (rating.value) body.rating = Number(rating.value);
      if (comment.value.trim()) body.text = comment.value.trim();
      sendFeedback(id, body).then(function () {
        more.hidden = true;
        note.textContent = "Thanks for your feedback.";
      }).catch(function (err) { note.textContent = err.message; });
    });
    el.appendChild(bar);
  }

  function citations(el, items) {
    if (!items || !items.length) return;
    var list = document.createElement("ol");
    list.className = "citations";
    items.forEach(function (c) {
      var li = document.createElement("li");
      li.textContent = c.title + (c.page ? ", p. " + c.page : "");
      list.appendChild(li);
    });
    el.appendChild(list);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/chat?token=" + encodeURIComponent(token));
    socket.onopen = function () {
      statusLine.textContent = "";
      while (queue.length) socket.send(queue.shift());
    };
    socket.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (data.type === "token") {
        if (!current) current = bubble("ai", "AI assistant", "");
        current.querySelector(".text").textContent += data.text;
        log.scrollTop = log.scrollHeight;
      } else if (data.type === "done") {
        conversationId = data.conversation_id;
        if (data.message_id && !hasMessage(data.message_id)) {
          if (!current) current = bubble("ai", LABELS.ai, "");
          current.querySelector(".text").textContent = data.reply;
          citations(current, data.citations);
          current.dataset.messageId = data.message_id;
          var shown = data.metadata || {};
          if (shown.notice || shown.crisis) current.classList.add("notice");
          feedbackBar(current);
        } else if (current) {
          current.remove();  // nothing was sent (or it already arrived live): no empty bubble
        }
        current = null;
        sendButton.disabled = false;
        statusLine.textContent = "";
        if (data.handoff) showHandoff(data.handoff);
        else setPresence("");
      } else if (data.type === "message") {
        if (data.conversation_id) conversationId = data.conversation_id;
        var message = data.message || {};
        if (hasMessage(message.id)) return;
        var el = bubble(message.sender_type, LABELS[message.sender_type] || LABELS.ai, message.text);
        el.dataset.messageId = message.id;
        citations(el, message.citations);
        var meta = message.metadata || {};
        if (meta.notice || meta.crisis) el.classList.add("notice");
        if (message.sender_type !== "client") feedbackBar(el);
      } else if (data.type === "coach_joined") {
        coachName = data.coach_name || coachName;
        systemLine(coachName + " joined the conversation");
        setPresence(coachName + " is in the conversation", false);
      } else if (data.type === "coach_left") {
        coachName = data.coach_name || coachName;
        systemLine(coachName + " handed the conversation back to the AI assistant");
        setPresence("");
      } else if (data.type === "error") {
        statusLine.textContent = data.message;
        current = null;
        sendButton.disabled = false;
      }
    };
    socket.onclose = function () {
      statusLine.textContent = "Reconnecting…";
      setTimeout(connect, 1500);
    };
  }

  function sendText(text) {
    bubble("client", LABELS.client, text);
    sendButton.disabled = true;
    statusLine.textContent = "Thinking…";
    var payload = JSON.stringify(conversationId ? { text: text, conversation_id: conversationId } : { text: text });
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(payload); else queue.push(payload);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    sendText(text);
  });
  humanButton.addEventListener("click", function () { sendText("/human"); });
  endButton.addEventListener("click", function () {
    if (!conversationId) { statusLine.textContent = "No session to end yet."; return; }
    endButton.disabled = true;
    fetch("/api/v1/widget/conversations/" + encodeURIComponent(conversationId) + "/end-session", {
      method: "POST",
      headers: { Authorization: "Bearer " + token }
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) statusLine.textContent = body.detail || "Could not end the session.";
        else if (body.session_id) statusLine.textContent = "Session ended. The assistant will sum it up for next time.";
        else statusLine.textContent = "No session in progress.";
      });
    }).catch(function () {
      statusLine.textContent = "Could not end the session; check your connection.";
    }).then(function () { endButton.disabled = false; });
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  Array.prototype.forEach.call(log.querySelectorAll(".msg.ai, .msg.human_coach"), function (el) {
    feedbackBar(el, el.dataset.feedback);
  });
  connect();
})();
