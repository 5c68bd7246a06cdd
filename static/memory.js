// Widget memory page: deletes a remembered insight or session summary through the widget memory API
// (the widget session cookie authenticates). Buttons carry data-delete="insights/<id>" or "summaries/<id>".
(function () {
  "use strict";
  var panel = document.getElementById("memory");
  var statusLine = document.getElementById("status");

  panel.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-delete]");
    if (!button) return;
    if (!confirm("Delete this? The assistant will not remember it again.")) return;
    button.disabled = true;
    var parts = button.dataset.delete.split("/");
    fetch("/api/v1/widget/memory/" + parts[0] + "/" + encodeURIComponent(parts[1]), {
      method: "DELETE"
    }).then(function (response) {
      if (response.status === 204 || response.status === 404) {
        var item = button.closest("li, article");
        item.parentNode.removeChild(item);
        statusLine.textContent = "Deleted.";
      } else {
        return response.json().then(function (body) {
          statusLine.textContent = body.detail || "Could not delete it; try again.";
          button.disabled = false;
        });
      }
    }).catch(function () {
      statusLine.textContent = "Could not delete it; check your connection and try again.";
      button.disabled = false;
    });
  });
})();
