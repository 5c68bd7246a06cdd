// Widget tone page: saves the intensity and gives or withdraws consent to a style through the widget tone API
// (the widget session cookie authenticates). The most intense style (data-twice="yes") asks twice: the first
// agreement turns its button into "confirm again", the second switches to it. No inline scripts (CSP).
(function () {
  "use strict";
  var panel = document.getElementById("tone");
  var statusLine = document.getElementById("status");

  function send(method, path, body) {
    statusLine.textContent = "Saving…";
    return fetch("/api/v1/widget/tone" + path, {
      method: method,
      headers: { "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.detail || "Could not save; try again.");
        return data;
      });
    });
  }

  function fail(error) {
    statusLine.textContent = error.message || "Could not save; check your connection and try again.";
  }

  document.getElementById("intensity-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var picked = panel.querySelector("input[name=intensity]:checked");
    if (!picked) return;
    send("PUT", "", { intensity: Number(picked.value) }).then(function (data) {
      statusLine.textContent = "Saved: intensity " + data.intensity + " (" + data.intensity_names[data.intensity] + ").";
    }).catch(fail);
  });

  panel.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-mode]");
    if (button) {
      var step = Number(button.dataset.step);
      button.disabled = true;
      send("POST", "/consent", { mode: button.dataset.mode, version: button.dataset.version, confirmation: step })
        .then(function (data) {
          if (data.mode === button.dataset.mode) { window.location.reload(); return; }
          button.dataset.step = "2";
          button.textContent = "Yes, I'm sure: confirm again";
          button.disabled = false;
          statusLine.textContent = "This is the most intense style: please confirm a second time.";
          button.focus();
        }).catch(function (error) { button.disabled = false; fail(error); });
      return;
    }
    if (event.target.id === "withdraw") {
      send("DELETE", "/consent").then(function () { window.location.reload(); }).catch(fail);
    }
  });
})();
