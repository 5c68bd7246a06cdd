// Settings page: a section whose save the server refused shows what the coach typed, not the stored values.
//
// Each section's form (form[data-keep="<section>"]) is a full-page POST; a refused save re-renders the page
// from the database with the reason in that section (templates/dashboard/settings.html marks that form
// data-refused). So that the coach fixes the one wrong field instead of typing the section again, the form's
// fields are kept in sessionStorage (this tab only) as it is sent, and put back into the same form when the
// next page says it was refused. Secrets (password fields), files and hidden fields are never kept; the kept
// values are removed as soon as the next page has loaded, refused or not.
(function () {
  "use strict";
  var KEY = "oc:settings-form";

  function kept(form) {
    return Array.prototype.filter.call(form.elements, function (field) {
      return field.name && ["password", "file", "hidden", "submit", "button"].indexOf(field.type) < 0;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || !form.dataset.keep) return;
    var values = kept(form).map(function (field) {
      var box = field.type === "checkbox" || field.type === "radio";
      return { name: field.name, value: field.value, checked: box ? field.checked : null };
    });
    try {
      sessionStorage.setItem(KEY, JSON.stringify({ section: form.dataset.keep, values: values }));
    } catch { /* storage full or off: the page simply shows the stored values */ }
  });

  var saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
    sessionStorage.removeItem(KEY);
  } catch { return; } // storage off, or not JSON
  if (!saved || !Array.isArray(saved.values)) return;
  var form = document.querySelector("form[data-refused][data-keep]");
  if (!form || form.dataset.keep !== saved.section) return;
  var fields = kept(form);
  if (fields.length !== saved.values.length) return; // another version of the form: nothing is guessed
  fields.forEach(function (field, index) {
    var value = saved.values[index];
    if (value.name !== field.name) return;
    if (value.checked !== null) field.checked = value.checked;
    else field.value = value.value;
  });
})();
