// Widget page: sends the client's messages over the /ws/chat WebSocket and renders streamed replies.
// Live events of the client's channel arrive on the same socket: the coach's messages ("message"),
// "coach_joined" and "coach_left"; a turn answered by nobody (the coach holds the conversation, or a draft
// waits for review) ends with `done` whose message_id is null and whose `handoff` says why.
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
  connect();
})();
