// Widget memory page: deletes a remembered insight or session summary through the widget memory API
// (the widget session cookie authenticates). Buttons carry data-delete="insights/<id>" or "summaries/<id>".
// Its texts come from the page (#memory's data-texts, in the page's language; static/texts.js).
(function () {
  "use strict";
  var panel = document.getElementById("memory");
  var statusLine = document.getElementById("status");
  var TEXTS = JSON.parse(panel.dataset.texts);

  // the page's "nothing yet" line, as a reload would show it, once the last insight (or the last session of a page
  // with no other page of sessions) is deleted
  function noteWhenEmpty(list) {
    var empty;
    if (list.matches("ul.remembered") && !list.querySelector("li")) {
      empty = document.createElement("li");
      empty.textContent = TEXTS.nothing;
      list.appendChild(empty);
    } else if (list === panel && !panel.querySelector("article.session, a[href*='#sessions']")) {
      empty = document.createElement("p");
      empty.textContent = TEXTS.no_summaries;
      panel.insertBefore(empty, document.getElementById("sessions").nextSibling);
    }
    if (empty) empty.className = "muted";
  }

  panel.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-delete]");
    if (!button) return;
    if (!confirm(TEXTS.confirm)) return;
    button.disabled = true;
    var parts = button.dataset.delete.split("/");
    fetch("/api/v1/widget/memory/" + parts[0] + "/" + encodeURIComponent(parts[1]), {
      method: "DELETE"
    }).then(function (response) {
      if (response.status === 204 || response.status === 404) {
        var item = button.closest("li, article");
        var list = item.parentNode;
        list.removeChild(item);
        noteWhenEmpty(list);
        statusLine.textContent = TEXTS.deleted;
      } else {
        return response.json().catch(function () { return null; }).then(function (body) {
          statusLine.textContent = window.widgetTexts.refusal(TEXTS, body, TEXTS.failed);
          button.disabled = false;
        });
      }
    }).catch(function () {
      statusLine.textContent = TEXTS.offline;
      button.disabled = false;
    });
  });
})();
