// Widget tone page: saves the intensity and gives or withdraws consent to a style through the widget tone API
// (the widget session cookie authenticates). The most intense style (data-twice="yes") asks twice: the first
// agreement turns its button into "confirm again", the second switches to it. No inline scripts (CSP). Its texts
// come from the page (#tone's data-texts, in the page's language; static/texts.js).
(function () {
  "use strict";
  var panel = document.getElementById("tone");
  var statusLine = document.getElementById("status");
  var TEXTS = JSON.parse(panel.dataset.texts);

  function send(method, path, body) {
    statusLine.textContent = TEXTS.saving;
    return fetch("/api/v1/widget/tone" + path, {
      method: method,
      headers: { "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined
    }).catch(function () { throw new Error(TEXTS.offline); }).then(function (response) {
      // (an error page that is not JSON, a proxy's 502: no parser's message)
      return response.json().catch(function () { throw new Error(TEXTS.failed); }).then(function (data) {
        if (!response.ok) throw new Error(window.widgetTexts.refusal(TEXTS, data, TEXTS.failed));
        return data;
      });
    });
  }

  function fail(error) {
    statusLine.textContent = error.message;
  }

  document.getElementById("intensity-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var picked = panel.querySelector("input[name=intensity]:checked");
    if (!picked) return;
    send("PUT", "", { intensity: Number(picked.value) }).then(function (data) {
      var label = TEXTS["intensity_" + data.intensity];
      statusLine.textContent = window.widgetTexts.fill(TEXTS.saved, { intensity: data.intensity, label: label });
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
          button.textContent = TEXTS.agree_again;
          button.disabled = false;
          statusLine.textContent = TEXTS.second;
          button.focus();
        }).catch(function (error) { button.disabled = false; fail(error); });
      return;
    }
    if (event.target.id === "withdraw") {
      send("DELETE", "/consent").then(function () { window.location.reload(); }).catch(fail);
    }
  });
})();
