// The documents page: drag and drop onto #dropzone (or pick a file), each upload sent with XMLHttpRequest so
// its progress shows (fetch reports no upload progress), to the same form endpoint as without script
// (POST /dashboard/documents). After the last upload the page reloads: the status table then follows reading
// and embedding (htmx polls /dashboard/documents/table). A refused file keeps its row with the server's reason
// (the page's error line in the response), and the page does not reload then: the table alone is refreshed.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var zone = document.getElementById("dropzone");
  var input = document.getElementById("upload-file");
  var list = document.getElementById("upload-progress");
  if (!form || !zone || !input || !list) return;

  function reason(xhr) {
    // why the server refused an upload: the error line of the page it answered with, else its status
    var page = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var error = page.querySelector("p.error[role=alert]");
    if (error && error.textContent.trim()) return error.textContent.trim();
    return xhr.status === 413 ? "the file is too large" : "refused (" + xhr.status + ")";
  }

  function send(file) {
    return new Promise(function (resolve) {
      var row = document.createElement("li");
      var label = document.createElement("span");
      var bar = document.createElement("progress");
      label.textContent = file.name + " ";
      bar.max = file.size || 1;
      bar.value = 0;
      row.appendChild(label);
      row.appendChild(bar);
      list.appendChild(row);
      var body = new FormData(form);
      body.set("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) { bar.max = event.total; bar.value = event.loaded; }
      });
      xhr.addEventListener("load", function () {
        bar.value = bar.max;
        var uploaded = xhr.status < 400;
        label.textContent = file.name + (uploaded ? " — uploaded " : " — not uploaded: " + reason(xhr) + " ");
        if (!uploaded) { row.classList.add("error"); row.setAttribute("role", "alert"); }
        resolve(uploaded);
      });
      xhr.addEventListener("error", function () { label.textContent = file.name + " — upload failed "; resolve(false); });
      xhr.send(body);
    });
  }

  function uploadAll(files) {
    if (!files || !files.length) return;
    var results = [];
    Array.prototype.reduce.call(files, function (done, file) {
      return done.then(function () { return send(file).then(function (ok) { results.push(ok); }); });
    }, Promise.resolve()).then(function () {
      if (results.every(Boolean)) { window.location.reload(); return; }
      // the reasons stay in view; the table shows the files that were taken
      if (window.htmx) window.htmx.ajax("GET", "/dashboard/documents/table", { target: "#documents", swap: "outerHTML" });
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    uploadAll(input.files);
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    uploadAll(event.dataTransfer && event.dataTransfer.files);
  });
})();
