// Widget page: sends the client's messages over the /ws/chat WebSocket and renders streamed replies.
// Every message gets its own id (crypto.randomUUID) and stays "unacknowledged" until the server's `ack`
// says it is stored; on each connection (the first too) the widget first fetches what was stored meanwhile
// (GET /api/v1/widget/conversations/{id}/messages?after=…, following its Link header's pages; live messages that
// come meanwhile are shown after them), then sends the unacknowledged messages again with
// the same ids (the server stores each once). A dropped socket is reopened with exponential back-off. The server answers messages in the order they arrived, so
// Send and Enter always work, also while an answer is streaming.
// Live events of the client's channel arrive on the same socket: the coach's messages ("message"), the client's own
// and the replies to them (sent from this tab or another, each shown once, by id), "coach_joined", "coach_left",
// "coach_dismissed" and
// "draft_discarded" (no reviewed reply is coming); a turn answered by nobody (the coach holds the conversation, or a
// draft waits for review) ends with `done` whose message_id is null and whose `handoff` says why. An answer the
// conversation was taken from while it streamed (the coach joined, or a later message got the crisis reply) ends
// with `stopped` instead: its streamed text and the typing bubble go. Those live events are lost while the socket is
// down: after each reconnect the widget asks where the conversation stands with the coach
// (GET /api/v1/widget/conversations/{id}/handoff) and redraws its presence line from that.
// A stored message shows its time and goes where a reload shows it (by created_at: a reply caught up after a
// reconnect goes above the messages the client sent while the connection was down, which are not stored yet).
// Every reply of the AI or the coach (not notices or crisis replies) gets thumbs up / down, then an optional
// 1–5 rating and comment: POST /api/v1/messages/{id}/feedback; a new choice replaces the previous one (a rating or
// comment given before is cleared, and the bar says so).
// While an answer is on its way a typing bubble shows (after STILL_WORKING_MS it says so); a citation opens its
// passages (GET /api/v1/widget/passages/{chunk_id}); phone numbers in crisis and notice replies are tel: links; an AI
// reply's Markdown shows formatted (static/markdown.js), without links, images or HTML.
// Framed by static/widget.js, opening the panel focuses the message input ({type: "opencoach:focus"} from the
// launcher), the close button and Esc ask the embedding page to close the panel, and every
// reply of the AI or the coach is announced to it (its unread badge): postMessage {type: "opencoach:…"}; once
// loaded, the page tells it its launcher's texts ({type: "opencoach:texts", texts}).
// The page's own texts come from the page (#log's data-texts: app.handoff.catalogue.widget_texts, in the language
// the server chose for the page), their fields ({coach}, {used}…) filled here (static/texts.js, as a refusal's
// code: the server's error events and API errors).
(function () {
  "use strict";
  var TEXTS = JSON.parse(document.getElementById("log").dataset.texts);
  var fill = window.widgetTexts.fill;
  var LABELS = { client: TEXTS.you, ai: TEXTS.ai, human_coach: TEXTS.coach };
  var SUMMARY_POLLS = 40, SUMMARY_POLL_MS = 3000;  // follow a summary for up to two minutes
  var STILL_WORKING_MS = 5000;
  var SVG = "http://www.w3.org/2000/svg";
  var THUMB_PATH = "M2 21h4V9H2v12zm20-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.4-1.1L13.2 1 6.6 7.6C6.2 8 6 8.5 " +
    "6 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7v-2z";
  var PHONE = /(\+?\d(?:[ -]?\d){2,14})/g;  // 112, 988, 0800 111 0 111, +1-800-273-8255
  var renderMarkdown = window.renderMarkdown;  // static/markdown.js
  var framed = window.parent !== window;
  var HUMAN_REQUEST = TEXTS.human_request;  // app.handoff.signals.asks_for_human reads it in its language
  var log = document.getElementById("log");
  var presence = document.getElementById("presence");
  var humanButton = document.getElementById("human");
  var coachName = log.dataset.coach || "";
  var form = document.getElementById("composer");
  var input = document.getElementById("text");
  var endButton = document.getElementById("end-session");
  var statusLine = document.getElementById("status");
  var limitLine = document.getElementById("text-limit");
  var maxChars = Number(input.dataset.maxChars) || 4000;  // app.chat.turn.intake.MAX_MESSAGE_CHARS
  var NEAR_LIMIT = 0.9;  // the count shows from 90 % of the limit
  var conversationId = log.dataset.conversation || null;
  var socket = null;
  var current = null;   // the AI message element being streamed into
  var unacked = [];     // {client_message_id, text, conversation_id?} sent but not yet stored, oldest first
  var waiting = 0;      // acknowledged messages this socket is answering (their `done` has not come yet)
  var lastMessageId = null;  // the catch-up's position: the newest message the page got (not an ack's)
  var draftPending = log.dataset.handoff === "draft_pending";  // "reviewing the reply…" shown: the coach's approved (or own) reply clears it
  var coachHolds = log.dataset.handoff === "claimed";  // the coach answers: no AI typing bubble
  var typing = null;    // the typing bubble while an answer is on its way
  var stillTimer = null;
  var awayUntil = log.dataset.away || null;  // "Monday, 9:00 AM (Europe/Berlin)": the coach is outside their hours
  var waitingShown = log.dataset.handoff === "open";  // the presence line says the client waits for the coach
  var handoffChanges = 0;  // live changes of the presence line: a handoff status asked for before one is older
  Array.prototype.forEach.call(log.querySelectorAll("[data-message-id]"), function (el) {
    lastMessageId = el.dataset.messageId;
  });

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "m-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
  }

  function setWaiting(delta) {
    waiting = Math.max(0, waiting + delta);
    statusLine.textContent = waiting ? TEXTS.thinking : "";
  }

  function seen(id) {
    if (id) lastMessageId = id;
  }

  function setPresence(text, waiting) {
    handoffChanges += 1;
    draftPending = false;
    coachHolds = false;
    waitingShown = false;
    presence.textContent = text || "";
    presence.className = "presence small" + (waiting ? " waiting" : "");
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
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
    if (handoff.status === "draft_pending") {
      setPresence(presenceLine("reviewing"), true);
      draftPending = true;
    }
    else if (handoff.status === "open") showWaiting();
    else if (handoff.status === "claimed") joined();
  }

  function showWaiting() {
    setPresence(waitingText(), true);
    waitingShown = true;
  }

  function waitingText() {
    // outside the coach's hours (as last asked: checkPresence) the line says when they are back, not the SLA
    return awayUntil ? presenceLine("away").replace("{back}", awayUntil) : presenceLine("waiting");
  }

  function presenceLine(name) {
    // the page's presence lines (data-presence-*) are in the language the client reads their handoff in
    // (data-language: its notice's, else their last messages'), the coach's SLA filled in; the name filled here
    return (log.dataset["presence" + name.charAt(0).toUpperCase() + name.slice(1)] || "").replace("{coach}", coachName);
  }

  function joined() {
    setPresence(presenceLine("joined"), false);
    coachHolds = true;
    stopTyping();
  }

  function notifyParent(type, texts) {
    // a ping, or (texts) the launcher's texts in the page's language: nothing of the conversation
    if (!framed) return;
    var message = { type: "opencoach:" + type };
    if (texts) message.texts = texts;
    window.parent.postMessage(message, "*");
  }

  function showTyping() {
    if (coachHolds || typing) return;
    typing = bubble("typing", LABELS.ai, "");
    var dots = typing.querySelector(".text");
    dots.setAttribute("aria-label", TEXTS.writing);
    for (var i = 0; i < 3; i++) dots.appendChild(document.createElement("span")).className = "dot";
    var note = document.createElement("div");
    note.className = "still small muted";
    typing.appendChild(note);
    stillTimer = setTimeout(function () {
      if (typing) note.textContent = TEXTS.still_working;
    }, STILL_WORKING_MS);
  }

  function stopTyping() {
    clearTimeout(stillTimer);
    if (typing) typing.remove();
    typing = null;
  }

  function streamBubble() {
    // the bubble an answer streams into: the typing bubble turned into a reply, or a new one
    if (!current) {
      var wasTyping = !!typing;
      stopTyping();
      current = bubble("ai", LABELS.ai, "");
      if (wasTyping) current.classList.add("streaming");
    }
    return current;
  }

  function linkPhones(el) {
    // phone numbers of a crisis or notice reply become tel: links (the text stays text: no HTML parsing)
    var body = el.querySelector(".text");
    if (!body || !el.classList.contains("notice") || body.querySelector("a")) return;
    var text = body.textContent;
    body.textContent = "";
    var last = 0;
    text.replace(PHONE, function (match, number, offset) {
      body.appendChild(document.createTextNode(text.slice(last, offset)));
      var a = document.createElement("a");
      a.href = "tel:" + match.replace(/[^\d+]/g, "");
      a.textContent = match;
      body.appendChild(a);
      last = offset + match.length;
      return match;
    });
    body.appendChild(document.createTextNode(text.slice(last)));
  }

  function hasMessage(id) {
    return !!(id && log.querySelector('[data-message-id="' + id + '"]'));
  }

  function ownBubble(clientId) {
    return clientId ? log.querySelector('[data-client-id="' + clientId + '"]') : null;
  }

  function acknowledge(clientId, messageId, createdAt) {
    unacked = unacked.filter(function (m) { return m.client_message_id !== clientId; });
    var el = ownBubble(clientId);
    if (!el) return;
    el.dataset.messageId = messageId;
    el.classList.remove("pending");
    if (stamp(el, createdAt)) place(el);
  }

  function stamp(el, createdAt) {
    // the time a stored message was stored, as the page shows it ("2026-06-01 08:00:00", UTC: the template's
    // strftime of created_at), and data-created-at to order it by; false when it has no time to show
    var at = createdAt ? new Date(createdAt) : null;
    if (!at || isNaN(at)) return false;
    el.dataset.createdAt = at.toISOString();
    if (!el.querySelector(".who .muted")) {
      var time = document.createElement("span");
      time.className = "small muted";
      time.textContent = el.dataset.createdAt.slice(0, 19).replace("T", " ");
      var who = el.querySelector(".who");
      who.appendChild(document.createTextNode(" "));
      who.appendChild(time);
    }
    return true;
  }

  function place(el) {
    // a stored message goes where a reload shows it: before the first message stored after it or the first of the
    // client's messages not stored yet (sent while the connection was down), else after the last one stored
    var at = Date.parse(el.dataset.createdAt);
    var stored = Array.prototype.filter.call(log.querySelectorAll(".msg[data-created-at], .msg.pending"), function (m) {
      return m !== el;
    });
    var later = stored.find(function (m) {
      return m.classList.contains("pending") || Date.parse(m.dataset.createdAt) > at;
    });
    var last = stored[stored.length - 1];
    if (later) {
      if (el.nextElementSibling !== later) log.insertBefore(el, later);
    } else if (last && el.compareDocumentPosition(last) & Node.DOCUMENT_POSITION_FOLLOWING) {
      log.insertBefore(el, last.nextSibling);
    }
  }

  function bubble(kind, label, text, before) {
    // a new message goes at the end (scrolled to); an earlier one (``before``: the message it precedes) above
    var el = document.createElement("div");
    el.className = "msg " + kind;
    var who = document.createElement("div");
    who.className = "who";
    who.textContent = label;
    var body = document.createElement("div");
    body.className = "text";
    body.dir = "auto";  // a right-to-left message (Arabic, Hebrew) reads from the right, its punctuation placed so
    body.textContent = text;
    el.appendChild(who);
    el.appendChild(body);
    if (before) {
      log.insertBefore(el, before);
    } else {
      log.appendChild(el);
      log.scrollTop = log.scrollHeight;
    }
    return el;
  }

  function fetchJson(url, options, failed) {
    // the JSON body of a successful response; else an Error with the server's refusal (its code's text, else its
    // `detail`), or with `failed` when it has none to show (no connection, or an error page that is not JSON: a
    // proxy's 502), never a parser's message
    return fetch(url, options).catch(function () { throw new Error(failed); }).then(function (response) {
      return response.json().catch(function () { throw new Error(failed); }).then(function (body) {
        if (!response.ok) throw new Error(window.widgetTexts.refusal(TEXTS, body, failed));
        return body;
      });
    });
  }

  function sendFeedback(id, body) {
    return fetchJson("/api/v1/messages/" + encodeURIComponent(id) + "/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }, TEXTS.feedback_failed);
  }

  function icon(path) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "18");
    svg.setAttribute("height", "18");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var p = document.createElementNS(SVG, "path");
    p.setAttribute("d", path);
    p.setAttribute("fill", "currentColor");
    svg.appendChild(p);
    return svg;
  }

  function feedbackForm() {
    // the optional 1–5 rating and comment a thumb opens (hidden until then)
    var more = document.createElement("form");
    more.className = "feedback-more";
    more.hidden = true;
    var rating = document.createElement("select");
    rating.name = "rating";
    rating.setAttribute("aria-label", TEXTS.rating);
    [TEXTS.rate, "1", "2", "3", "4", "5"].forEach(function (label, i) {
      var option = document.createElement("option");
      option.value = i ? String(i) : "";
      option.textContent = i ? label + " ★" : label;
      rating.appendChild(option);
    });
    var comment = document.createElement("input");
    comment.name = "text";
    comment.maxLength = 2000;
    comment.placeholder = TEXTS.comment;
    var submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = TEXTS.send;
    more.appendChild(rating);
    more.appendChild(comment);
    more.appendChild(submit);
    return more;
  }

  function feedbackBar(el, rated, detailed) {
    // ``detailed``: the stored feedback has a rating or comment, which a new thumb replaces (the server keeps only
    // the latest feedback: a kept 1–2 ★ would turn a 👍 back into a 👎), so the bar then says they were cleared
    var id = el.dataset.messageId;
    if (!id || el.classList.contains("notice") || el.querySelector(".feedback")) return;
    var bar = document.createElement("div");
    bar.className = "feedback small";
    var helpful = rated === "up" ? true : rated === "down" ? false : null;
    function thumb(value, glyph, label) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "thumb " + (value ? "up" : "down");
      b.appendChild(glyph);
      b.title = label;
      b.setAttribute("aria-label", label);
      b.setAttribute("aria-pressed", String(helpful === value));
      b.addEventListener("click", function () { choose(value); });
      bar.appendChild(b);
      return b;
    }
    var up = thumb(true, icon(THUMB_PATH), TEXTS.helpful);
    var down = thumb(false, icon(THUMB_PATH), TEXTS.not_helpful);
    var more = feedbackForm();
    var rating = more.elements.rating, comment = more.elements.text;
    var note = document.createElement("span");
    note.className = "muted";
    bar.appendChild(more);
    bar.appendChild(note);
    function show(value) {
      helpful = value;
      up.setAttribute("aria-pressed", String(value === true));
      down.setAttribute("aria-pressed", String(value === false));
    }
    function saved(stored) {
      // the form shows the feedback as stored; returns whether a rating or comment stored before was cleared
      var cleared = detailed && !stored.rating && !stored.text;
      detailed = Boolean(stored.rating || stored.text);
      rating.value = stored.rating ? String(stored.rating) : "";
      comment.value = stored.text || "";
      return cleared;
    }
    function choose(value) {
      sendFeedback(id, { helpful: value }).then(function (stored) {
        show(value);
        more.hidden = false;
        if (el === log.lastElementChild) scrollDown();
        note.textContent = saved(stored) ? TEXTS.rating_cleared : value ? TEXTS.thanks : TEXTS.thanks_missing;
      }).catch(function (err) { note.textContent = err.message; });
    }
    more.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = { helpful: helpful !== false };
      if (rating.value) body.rating = Number(rating.value);
      if (comment.value.trim()) body.text = comment.value.trim();
      sendFeedback(id, body).then(function (stored) {
        saved(stored);
        more.hidden = true;
        note.textContent = TEXTS.feedback_saved;
      }).catch(function (err) { note.textContent = err.message; });
    });
    el.appendChild(bar);
    if (el === log.lastElementChild) scrollDown();  // the newest reply's thumbs in view, not below the fold
  }

  function openable(li, passages) {
    // a citation becomes a button that shows (and hides) its passages ([{marker, chunkId}], passagesOf): every
    // passage the reply cites from that source, each led by its marker when there are several, then where they are
    var label = li.textContent.trim();
    li.textContent = "";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "link citation";
    button.textContent = label;
    button.setAttribute("aria-expanded", "false");
    var quote = document.createElement("blockquote");
    quote.className = "passage";
    quote.hidden = true;
    li.appendChild(button);
    li.appendChild(quote);
    button.addEventListener("click", function () {
      var open = quote.hidden;
      quote.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      if (!open || quote.dataset.loaded) return;
      quote.textContent = passages.length > 1 ? TEXTS.loading_passages : TEXTS.loading_passage;
      Promise.all(passages.map(function (passage) {
        var url = "/api/v1/widget/passages/" + encodeURIComponent(passage.chunkId);
        return fetchJson(url, undefined, TEXTS.passage_failed)
          .catch(function (err) { return { error: err.message }; });
      })).then(function (bodies) { showPassages(quote, passages, bodies); });
    });
  }

  function showPassages(quote, passages, bodies) {
    // the loaded passages (a failed one says why), then their sources once each; loaded for good once none failed
    quote.textContent = "";
    var sources = [];
    bodies.forEach(function (body, i) {
      var text = document.createElement("p");
      var lead = passages.length > 1 && passages[i].marker !== undefined ? "[" + passages[i].marker + "] " : "";
      text.textContent = lead + (body.error || body.text + (body.after ? " " + body.after : ""));
      quote.appendChild(text);
      if (!body.error && sources.indexOf(sourceLabel(body)) < 0) sources.push(sourceLabel(body));
    });
    if (sources.length) {
      var source = document.createElement("footer");
      source.className = "small muted";
      source.textContent = "— " + sources.join("; ");
      quote.appendChild(source);
    }
    if (!bodies.some(function (body) { return body.error; })) quote.dataset.loaded = "1";
  }

  function passagesOf(c) {
    // what a client citation opens (app.conversations.metadata.client_citations): each marker's passage
    // (chunk_ids beside markers; a citation without them opens its chunk_id), those without a chunk id left out
    var ids = c.chunk_ids || [c.chunk_id];
    var markers = c.markers || [];
    var passages = [];
    ids.forEach(function (id, i) { if (id) passages.push({ marker: markers[i], chunkId: String(id) }); });
    return passages;
  }

  // where a cited passage is: a transcript's time or a PDF page's own label, else a page (app.rag.retrieval.source_label)
  function sourceLabel(c) {
    if (c.locator) return c.title + ", " + c.locator;
    return c.title + (c.page ? ", p. " + c.page : "");
  }

  function citations(el, items) {
    // one per source (app.conversations.metadata.client_citations), led by the reply's markers it stands for:
    // "[1, 2] Book, p. 3" when the reply cites two passages of that page as [1] and [2]
    if (!items || !items.length) return;
    var list = document.createElement("ol");
    list.className = "citations marked";
    items.forEach(function (c, i) {
      var li = document.createElement("li");
      li.textContent = "[" + (c.markers || [i + 1]).join(", ") + "] " + sourceLabel(c);
      list.appendChild(li);
      var passages = passagesOf(c);
      if (passages.length) openable(li, passages);
    });
    el.appendChild(list);
  }

  function showMessage(message, before) {
    // a stored message, where a reload shows it (live, from this client's other tabs too, or caught up after a
    // reconnect: place) or, ``before`` an element, above it (an earlier page of the transcript); returns its
    // element, or null when it is shown already
    if (!before) seen(message.id);
    if (hasMessage(message.id)) return null;
    if (!before && message.client_message_id && ownBubble(message.client_message_id)) {
      acknowledge(message.client_message_id, message.id, message.created_at);
      return null;
    }
    var streamed = current && message.sender_type !== "client" && current.querySelector(".text").textContent;
    if (!before && streamed === message.text) return settle(message);  // the reply streaming here, before its `done`
    var el = bubble(message.sender_type, LABELS[message.sender_type] || LABELS.ai, message.text, before);
    el.dataset.messageId = message.id;
    if (stamp(el, message.created_at) && !before) place(el);
    citations(el, message.citations);
    var meta = message.metadata || {};
    if (meta.notice || meta.crisis) el.classList.add("notice");
    renderMarkdown(el);
    linkPhones(el);
    if (before) {  // an earlier message: its thumbs as the client left them, nothing announced
      var feedback = meta.feedback || {};
      var thumb = feedback.helpful === true ? "up" : feedback.helpful === false ? "down" : null;
      if (message.sender_type !== "client") feedbackBar(el, thumb, Boolean(feedback.rating || feedback.text));
      return el;
    }
    if (message.sender_type !== "client") {
      feedbackBar(el);
      notifyParent("message");
    }
    if (draftPending && message.sender_type !== "client") setPresence("");  // the reviewed reply arrived
    return el;
  }

  function ofThisConversation(data) {
    // a live event (a message, the coach joining or leaving) of the conversation this widget shows; a page opened
    // before the client had one takes the first message's (started in their other tab: a reload shows it)
    if (!conversationId && data.type === "message") conversationId = data.conversation_id || null;
    return Boolean(conversationId) && data.conversation_id === conversationId;
  }

  function settle(reply) {
    // the streamed answer (or a new bubble) becomes the stored reply ({id, text, citations, metadata, created_at})
    var el = streamBubble();
    current = null;
    el.classList.remove("streaming");
    var text = el.querySelector(".text");
    text.textContent = reply.text;
    text.classList.remove("markdown");  // rendered again from the stored text
    citations(el, reply.citations);
    el.dataset.messageId = reply.id;
    var shown = reply.metadata || {};
    if (shown.notice || shown.crisis) el.classList.add("notice");
    renderMarkdown(el);
    linkPhones(el);
    if (stamp(el, reply.created_at)) place(el);
    feedbackBar(el);
    notifyParent("message");
    seen(reply.id);
    return el;
  }

  function onDone(data) {
    conversationId = data.conversation_id;
    if (data.message_id && !hasMessage(data.message_id)) {
      settle({
        id: data.message_id, text: data.reply, citations: data.citations, metadata: data.metadata,
        created_at: data.created_at
      });
    } else if (current) {
      current.remove();  // nothing was sent (or it already arrived live): no empty bubble
    }
    current = null;
    stopTyping();
    setWaiting(-1);
    if (data.handoff) showHandoff(data.handoff);
    else if (data.message_id) setPresence("");  // an AI reply: the AI has the conversation
  }

  function nextLink(response) {
    // the address of the page after this one: the Link header's rel="next" (RFC 8288), null on the last page
    var next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
    return next ? next[1] : null;
  }

  var earlier = document.getElementById("earlier");  // "Earlier messages": the page before the oldest shown

  function loadEarlier() {
    // the next page back (newest first), each message put above the oldest shown, the view kept where it was;
    // the response's Link header (rel="next") is the page after, none on the first message
    earlier.disabled = true;
    fetch(earlier.dataset.url).then(function (response) {
      if (!response.ok) throw new Error("not loaded");
      var next = nextLink(response);
      return response.json().then(function (messages) {
        var height = log.scrollHeight;
        var above = earlier.nextElementSibling;
        messages.forEach(function (message) { above = showMessage(message, above) || above; });
        log.scrollTop += log.scrollHeight - height;
        if (next) {
          earlier.dataset.url = next;
          earlier.disabled = false;
          earlier.textContent = TEXTS.earlier;  // (after a failed try)
        } else {
          earlier.remove();
          earlier = null;
        }
      });
    }).catch(function () {
      earlier.disabled = false;
      earlier.textContent = TEXTS.earlier_retry;
    });
  }

  if (earlier) earlier.addEventListener("click", loadEarlier);

  var heldLive = null;  // live messages that came while catching up, shown after the older ones it fetches

  function catchUp() {
    // what was stored while the socket was down (replies finished after the drop, the coach's messages); resolves
    // with the messages fetched
    if (!conversationId) return Promise.resolve([]);
    var url = "/api/v1/widget/conversations/" + encodeURIComponent(conversationId) + "/messages" +
      (lastMessageId ? "?after=" + encodeURIComponent(lastMessageId) : "");
    var missed = [];
    heldLive = heldLive || [];
    return fetchMissed(url, missed).catch(function () { /* the next reconnect tries again */ }).then(function () {
      var held = heldLive || [];
      heldLive = null;
      held.forEach(function (message) { showMessage(message); });  // each once: shown already if fetched
      return missed;
    });
  }

  function fetchMissed(url, missed) {
    // one response holds at most 200 messages; its Link header (rel="next") asks for those after them
    return fetch(url).then(function (response) {
      if (!response.ok) return;
      var next = nextLink(response);
      return response.json().then(function (messages) {
        messages.forEach(function (message) {  // not forEach(showMessage): its index would be `before`
          showMessage(message);
          missed.push(message);
        });
        if (next) return fetchMissed(next, missed);
      });
    });
  }

  function refreshHandoff(missed) {
    // where the conversation stands with the coach now ({handoff: {status, reason} | null}), for the presence line
    // after a reconnect: the coach may have joined or handed back while the socket was down (their live events
    // lost). A line says so, as the live event would have: joined, or handed back when the coach held the
    // conversation before or wrote in it meanwhile (``missed``: the messages the catch-up fetched)
    if (!conversationId) return;
    var asked = handoffChanges;
    var url = "/api/v1/widget/conversations/" + encodeURIComponent(conversationId) + "/handoff";
    fetch(url, { cache: "no-store" }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (state) {
      if (!state || asked !== handoffChanges) return;  // not read, or a live event since says newer
      var now = state.handoff ? state.handoff.status : null;
      var was = coachHolds ? "claimed" : waitingShown ? "open" : draftPending ? "draft_pending" : null;
      if (now === was) return;
      var coachWrote = missed.some(function (message) { return message.sender_type === "human_coach"; });
      if (now === "claimed") systemLine(fill(TEXTS.joined, { coach: coachName }));
      else if (!now && (was === "claimed" || (was === "open" && coachWrote))) {
        systemLine(fill(TEXTS.left, { coach: coachName }));
      }
      if (now) showHandoff(state.handoff);
      else setPresence("");
    }).catch(function () { /* the next reconnect asks again */ });
  }

  function transmit(item) {
    var payload = { text: item.text, client_message_id: item.client_message_id };
    if (item.conversation_id || conversationId) payload.conversation_id = item.conversation_id || conversationId;
    socket.send(JSON.stringify(payload));
  }

  var retries = 0;  // reconnect attempts since the last open socket
  var SESSION_RENEW_MS = 3600 * 1000;  // the session cookie lasts 12 hours from its last renewal

  function renewSession() {
    // keeps the session cookie alive while the page is open; resolves false once it has expired (401)
    return fetch("/w/session", { cache: "no-store" }).then(function (response) {
      return response.status !== 401;
    }, function () { return true; });  // offline: not known to be expired
  }

  function expired() {
    statusLine.textContent = TEXTS.expired;
    input.disabled = true;
    document.getElementById("send").disabled = true;
  }

  setInterval(renewSession, SESSION_RENEW_MS);

  // Whether the coach is away changes while a page stays open (their hours start or end): the page says when
  // (data-away-changes-in, seconds), and the widget asks GET /api/v1/widget/presence again then ({away_until,
  // changes_in}), at least hourly (the coach may change their hours). Deadlines are on this page's clock
  // (Date.now: a computer that slept catches up at the next tick), so a wrong system clock does not matter.
  var PRESENCE_TICK_MS = 30 * 1000, PRESENCE_RECHECK_MS = 3600 * 1000, PRESENCE_RETRY_MS = 60 * 1000;
  var presenceDue = presenceDeadline(log.dataset.awayChangesIn);
  var presenceAsked = false;

  function presenceDeadline(seconds) {
    return Date.now() + Math.min(seconds ? Number(seconds) * 1000 : Infinity, PRESENCE_RECHECK_MS);
  }

  function checkPresence() {
    if (presenceAsked || Date.now() < presenceDue) return;
    presenceAsked = true;
    fetch("/api/v1/widget/presence?language=" + encodeURIComponent(log.dataset.language || "en"), { cache: "no-store" }).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (presence) {
      if (!presence) throw new Error("not loaded");
      awayUntil = presence.away_until || null;
      presenceDue = presenceDeadline(presence.changes_in);
      if (waitingShown) showWaiting();
    }).catch(function () {
      presenceDue = Date.now() + PRESENCE_RETRY_MS;
    }).then(function () { presenceAsked = false; });
  }

  setInterval(checkPresence, PRESENCE_TICK_MS);

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    // the widget session cookie authenticates; ?lang= passes the embedding page's language on (as this page got
    // it), which the server keeps with each message for a conversation that has not told its own yet
    var lang = new URLSearchParams(location.search).get("lang");
    socket = new WebSocket(scheme + location.host + "/ws/chat" + (lang ? "?lang=" + encodeURIComponent(lang) : ""));
    var opened = false;
    socket.onopen = function () {
      opened = true;
      retries = 0;
      waiting = 0;  // answers begun on an earlier socket arrive as live messages (or through catchUp)
      statusLine.textContent = "";
      // what was stored since the page was made (or since the last socket dropped), before the socket listened
      catchUp().then(function (missed) {
        refreshHandoff(missed);
        if (socket.readyState !== WebSocket.OPEN) return;
        unacked.forEach(transmit);  // the same ids again: stored once
      });
    };
    socket.onmessage = function (event) {
      var data = JSON.parse(event.data);
      if (data.type === "ack") {
        conversationId = data.conversation_id || conversationId;
        // not the catch-up's position: a reply stored before this message may still be on its way (its `done`
        // lost if the socket drops now), and the catch-up must fetch it
        acknowledge(data.client_message_id, data.message_id, data.created_at);
        if (data.answering) setWaiting(1);
      } else if (data.type === "token") {
        streamBubble().querySelector(".text").textContent += data.text;
        log.scrollTop = log.scrollHeight;
      } else if (data.type === "done") {
        onDone(data);
      } else if (data.type === "stopped") {
        // the conversation was taken from the AI while it answered (the coach joined, a crisis reply came): no more
        // of this answer comes, and what streamed of it goes (nothing of it is stored)
        if (current) current.remove();
        current = null;
        stopTyping();
        setWaiting(-1);
      } else if (data.type === "error") {
        if (data.in_reply_to) {  // an answer that failed: no done follows (a job may answer it later)
          if (current) current.remove();  // the cut-off reply: the stored one comes live
          current = null;
          setWaiting(-1);
        }
        statusLine.textContent = window.widgetTexts.refusal(TEXTS, data, "");
        stopTyping();
        if (data.client_message_id) {  // refused: it is not stored, so it is not sent again
          var refused = unacked.filter(function (m) { return m.client_message_id === data.client_message_id; });
          unacked = unacked.filter(function (m) { return m.client_message_id !== data.client_message_id; });
          // its text goes back to an empty input, to send again (after the wait of a rate limit) or edit
          if (refused.length && !input.value) { input.value = refused[0].text; checkLength(); }
          var el = ownBubble(data.client_message_id);
          if (el) { el.classList.remove("pending"); el.classList.add("failed"); }
        }
      } else if (!ofThisConversation(data)) {
        return;  // the client's other conversations (their Telegram chat) are not this widget's
      } else if (data.type === "message") {
        if (heldLive) heldLive.push(data.message || {});  // newer than what the catch-up still fetches
        else showMessage(data.message || {});
      } else if (data.type === "coach_joined") {
        coachName = data.coach_name || coachName;
        systemLine(fill(TEXTS.joined, { coach: coachName }));
        joined();
      } else if (data.type === "coach_left" || data.type === "coach_dismissed") {
        coachName = data.coach_name || coachName;
        systemLine(fill(data.type === "coach_left" ? TEXTS.left : TEXTS.dismissed, { coach: coachName }));
        setPresence("");
      } else if (data.type === "draft_discarded") {
        if (draftPending) setPresence("");  // no reviewed reply is coming
      }
    };
    socket.onclose = function () {
      statusLine.textContent = TEXTS.reconnecting;
      if (current) current.remove();  // a reply cut off mid-stream: the stored one comes live or by catchUp
      current = null;
      stopTyping();
      // exponential back-off with full jitter (1 s, 2 s, 4 s … at most 30 s), so that clients whose server
      // went away do not all come back at the same moment; reset once a connection opens
      var delay = Math.min(30000, 1000 * Math.pow(2, retries));
      retries += 1;
      var retry = function () { setTimeout(connect, 250 + Math.random() * delay); };
      if (opened) { retry(); return; }
      // refused before it opened: the session may have expired (a tab left open overnight), then no retry helps
      renewSession().then(function (valid) { if (valid) retry(); else expired(); });
    };
  }

  // The client's first message from this page accepts the AI disclosure shown above the conversation
  // (POST /api/v1/widget/disclosure with its version; recorded once per version, listed in the data export).
  var disclosure = document.getElementById("disclosure");
  var disclosureAccepted = false;
  function acceptDisclosure() {
    if (disclosureAccepted || !disclosure || !disclosure.dataset.version) return;
    disclosureAccepted = true;
    fetch("/api/v1/widget/disclosure", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ version: disclosure.dataset.version })
    }).then(function (response) {
      if (!response.ok) disclosureAccepted = false;
    }, function () { disclosureAccepted = false; });
  }

  // A message is at most maxChars characters, counted as the server counts them (code points of the trimmed
  // text, so an emoji is one). Nothing is cut: near the limit a count shows, and over it the message is not sent
  // and says by how much it is too long, so the client can shorten or split it.
  function checkLength() {
    var used = Array.from(input.value.trim()).length;
    var over = used > maxChars;
    limitLine.hidden = used < maxChars * NEAR_LIMIT;
    var counted = { used: used, max: maxChars, over: used - maxChars };
    limitLine.textContent = fill(over ? TEXTS.too_long : TEXTS.count, counted);
    limitLine.classList.toggle("over", over);
    if (over) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    return !over;
  }

  function sendText(text) {
    acceptDisclosure();
    var item = { client_message_id: newId(), text: text, conversation_id: conversationId };
    var el = bubble("client", LABELS.client, text);
    el.dataset.clientId = item.client_message_id;
    el.classList.add("pending");
    var greeting = document.getElementById("greeting");
    if (greeting) greeting.querySelectorAll(".suggestions").forEach(function (s) { s.remove(); });
    unacked.push(item);
    showTyping();
    if (socket && socket.readyState === WebSocket.OPEN) transmit(item);
  }

  function followSummary(sessionId, tries) {
    // GET /api/v1/widget/sessions/{id}: "pending" until the summary job has run, then "summarized" | "failed"
    fetch("/api/v1/widget/sessions/" + encodeURIComponent(sessionId)).then(function (response) {
      return response.ok ? response.json() : null;
    }).then(function (ended) {
      if (!ended) return;
      if (ended.status === "summarized") {
        statusLine.textContent = fill(TEXTS.summary_ready, { memory: TEXTS.memory });
      } else if (ended.status === "failed") {
        statusLine.textContent = fill(TEXTS.summary_failed, { coach: coachName });
      } else if (tries < SUMMARY_POLLS) {
        setTimeout(function () { followSummary(sessionId, tries + 1); }, SUMMARY_POLL_MS);
      }
    }).catch(function () { /* the memory page shows the outcome too */ });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (!checkLength()) { input.focus(); return; }  // kept in the input, to shorten
    input.value = "";
    checkLength();
    sendText(text);
  });
  input.addEventListener("input", checkLength);
  humanButton.addEventListener("click", function () { sendText(HUMAN_REQUEST); });
  endButton.addEventListener("click", function () {
    if (!conversationId) { statusLine.textContent = TEXTS.no_session_yet; return; }
    endButton.disabled = true;
    var url = "/api/v1/widget/conversations/" + encodeURIComponent(conversationId) + "/end-session";
    fetchJson(url, { method: "POST" }, TEXTS.end_failed).then(function (body) {
      if (body.session_id) {
        statusLine.textContent = TEXTS.summary_pending;
        followSummary(body.session_id, 0);
      } else statusLine.textContent = TEXTS.no_session;
    }).catch(function (err) {
      statusLine.textContent = err.message;
    }).then(function () { endButton.disabled = false; });
  });
  log.addEventListener("click", function (event) {
    var suggestion = event.target.closest("button.suggestion");
    if (suggestion) sendText(suggestion.textContent.trim());
  });
  var closeButton = document.getElementById("close");
  if (framed) {
    notifyParent("texts", { launcher: TEXTS.launcher, close: TEXTS.close, unread: TEXTS.unread, frame: TEXTS.frame });
    closeButton.hidden = false;
    closeButton.addEventListener("click", function () { notifyParent("close"); });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") notifyParent("close");
    });
    window.addEventListener("message", function (event) {
      // the launcher opened the panel: the message input has the focus (not the page, whose Tab order passes every
      // message's controls first)
      if (event.source === window.parent && event.data && event.data.type === "opencoach:focus" && !input.disabled) {
        input.focus({ preventScroll: true });
      }
    });
  }
  input.addEventListener("keydown", function (event) {
    // not while an input method composes (Chinese, Japanese…): its Enter confirms the characters
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
  });
  Array.prototype.forEach.call(log.querySelectorAll(".msg.ai, .msg.human_coach"), function (el) {
    if (el.id !== "greeting") feedbackBar(el, el.dataset.feedback, "feedbackRated" in el.dataset);
    renderMarkdown(el);
    linkPhones(el);
  });
  Array.prototype.forEach.call(log.querySelectorAll(".citations li[data-chunks]"), function (li) {
    var markers = li.dataset.markers ? JSON.parse(li.dataset.markers) : null;
    var passages = passagesOf({ chunk_ids: JSON.parse(li.dataset.chunks), markers: markers });
    if (passages.length) openable(li, passages);
  });
  scrollDown();  // a reload opens at the newest message
  connect();
})();
