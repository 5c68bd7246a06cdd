// The widget pages' own texts (app.handoff.catalogue.page_texts, in the page's language): loaded before
// chat.js, tone.js and memory.js, which read theirs from their element's data-texts. widgetTexts.fill fills a
// text's {field}s; widgetTexts.refusal says a refusal (a socket's error event, an API error body) in the page's
// language: the catalogue's refused_<code> filled with its fields when the server gave a code the texts know,
// else the server's English (message, detail), else `failed`. Texts go in with textContent only.
window.widgetTexts = (function () {
  "use strict";

  function fill(template, fields) {
    // a catalogue text with its {field}s filled in (each as plain text)
    return template.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(fields, name) ? String(fields[name]) : whole;
    });
  }

  function refusal(texts, body, failed) {
    var known = body && body.code && Object.prototype.hasOwnProperty.call(texts, "refused_" + body.code);
    if (known) return fill(texts["refused_" + body.code], body.fields || {});
    return (body && (body.message || body.detail)) || failed;
  }

  return { fill: fill, refusal: refusal };
})();
