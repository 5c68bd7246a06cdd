// The inbox and the conversation pane (templates/dashboard/inbox.html, partials/conversation_pane.html).
//
// The pane's forms (take over, hand back, send, approve or discard a draft) are sent by htmx (hx-boost) and
// the pane is replaced by the one the action's redirect renders; here:
//   - a refused action (409: handed back twice, a draft already decided) still shows the pane with its error;
//   - after a pane is shown: the transcript scrolls to the newest message, the list marks the open row;
//   - live events (static/dashboard.js re-dispatches them as "oc:live"): the list is re-fetched with the
//     current filters (state, last message, unread; a crisis alert turns its row to "Crisis") and as many
//     rows as "Load more" showed (up to 200), a message in the open conversation marks it read
//     (POST /dashboard/conversations/<id>/read) while the tab is visible, and a new draft re-renders the
//     transcript so that it appears under the client's message it answers (the composer is left alone).
(function () {
  "use strict";
  var filters = document.getElementById("inbox-filters");
  var pending = null;
  var listFetches = 0;
  var PAGE = 50, MAX_PAGE = 200;  // app.conversations.inbox.PAGE_SIZE and MAX_PAGE_SIZE
  var loadingMore = false, refreshAfterMore = false;
  var listInFlight = 0;  // the number of the newest list refresh while it is unanswered, else 0

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || ""; } catch { return ""; }
  }

  function openConversation() {
    var pane = document.getElementById("conversation-pane");
    return pane ? pane.dataset.conversation || null : null;
  }

  function scrollTranscript() {
    var transcript = document.getElementById("transcript");
    if (transcript) transcript.scrollTop = transcript.scrollHeight;
  }

  // isLatest(): false when a newer fetch of the same element was started (responses can arrive out of order)
  function swapIn(url, id, isLatest) {
    return fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) return;
      return response.text().then(function (html) {
        if (isLatest && !isLatest()) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
        var shown = document.getElementById(id);
        if (!fresh || !shown) return;
        var scrolled = shown.scrollTop;  // the inbox list scrolls: a refresh keeps the coach's place in it
        shown.replaceWith(fresh);
        fresh.scrollTop = scrolled;
        if (window.htmx) window.htmx.process(fresh);
      });
    }).catch(function () { /* the next event catches up */ });
  }

  function refreshList() {
    if (!filters) return;
    if (pending) clearTimeout(pending);
    if (loadingMore) { refreshAfterMore = true; return; }
    pending = setTimeout(function () {
      pending = null;
      var query = new URLSearchParams(new FormData(filters));
      var shown = document.querySelectorAll("#inbox-list .inbox-row").length;
      if (shown > PAGE) query.set("limit", String(Math.min(shown, MAX_PAGE)));  // keep what "Load more" added
      query = query.toString();
      var mine = ++listFetches;
      listInFlight = mine;
      swapIn("/dashboard/inbox/list?" + query, "inbox-list", function () { return mine === listFetches; })
        .then(function () { if (listInFlight === mine) listInFlight = 0; });  // an older one leaves it be
    }, 150);
  }

  function markRead(conversationId) {
    return fetch("/dashboard/conversations/" + conversationId + "/read", {
      method: "POST", credentials: "same-origin", headers: { "x-csrftoken": csrfToken() }
    }).catch(function () { /* stays unread until the next visit */ });
  }

  function paneShown() {
    scrollTranscript();
    var open = openConversation();
    var selected = document.getElementById("inbox-selected");
    if (selected && open) {
      selected.value = open;
      selected.disabled = false;  // an empty one stays out of the query (not a conversation id)
    }
    refreshList();
  }

  // "Load more" (#inbox-more, htmx): a list refresh meanwhile would drop the rows it appends, so refreshes
  // wait for it (one in flight is discarded) and run once it is done, counting the appended rows
  var moreRequest = null;  // its xhr: htmx announces the end on an ancestor once the link is swapped out
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt.id !== "inbox-more") return;
    loadingMore = true;
    moreRequest = event.detail.xhr;
    if (pending) { clearTimeout(pending); pending = null; refreshAfterMore = true; }
    if (listInFlight) { listFetches++; listInFlight = 0; refreshAfterMore = true; }  // its answer is dropped
  });
  document.body.addEventListener("htmx:afterRequest", function (event) {
    if (!moreRequest || event.detail.xhr !== moreRequest) return;
    loadingMore = false;
    moreRequest = null;
    if (refreshAfterMore) { refreshAfterMore = false; setTimeout(refreshList, 0); }  // after the swap
  });

  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "conversation-pane" && event.detail.xhr.status === 409) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  var shownPane = document.getElementById("conversation-pane");
  document.body.addEventListener("htmx:afterSettle", function () {
    var pane = document.getElementById("conversation-pane");
    if (pane && pane !== shownPane) {  // a new pane (another conversation, or after an action)
      shownPane = pane;
      paneShown();
    }
  });

  document.addEventListener("oc:live", function (event) {
    var type = event.detail.type;
    var data = event.detail.data || {};
    var open = openConversation();
    if (type === "message" && data.conversation_id === open && document.visibilityState === "visible") {
      markRead(open).then(refreshList);
      return;
    }
    if (type === "draft" && data.draft && data.draft.conversation_id === open) {
      swapIn("/dashboard/conversations/" + open, "transcript").then(scrollTranscript);
    }
    if (type === "ready" || type === "message" || type === "handoff" || type === "draft" || type === "alert") refreshList();
  });

  scrollTranscript();
})();
