// An AI reply's Markdown as formatted text, for the widget (static/chat.js) and the coach's dashboard
// (static/dashboard.js): window.renderMarkdown(el) renders the `.text` of a `.msg.ai` element that is no notice with
// marked (CommonMark with GitHub's tables, lists and line breaks), then cleans it with DOMPurify to TAGS with no
// attribute. What a model writes as HTML ("Press <Enter>", "<goal>", "<img onerror=…>") shows as the text it is; a
// link shows its text, an image its alt text: a poisoned document or an injected prompt can put neither a link nor
// anything that runs in front of a client. Outside code, "2*3*4" stays a product (not "2<em>3</em>4") and a numbered
// source line ("[1]: …") stays text (not a link reference, which marked drops). The client's and the coach's messages
// and notices stay plain text, as typed. Loaded after static/vendor/marked.umd.js and static/vendor/purify.min.js;
// without them the text stays as it is.
window.renderMarkdown = (function () {
  "use strict";
  var TAGS = ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "hr",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"];
  var ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" };
  var FENCE = /^\s{0,3}(```|~~~)/;
  var CODE_SPAN = /(`+[^`]*`+)/;
  var parser = null;

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, function (c) { return ESCAPES[c]; });
  }

  function markdown() {
    // one parser, made on first use, whose renderer writes HTML as text, a link as its text, an image as its alt
    if (!parser) {
      parser = new window.marked.Marked({
        gfm: true, breaks: true, async: false,
        renderer: {
          html: function (token) { return escapeHtml(token.text); },
          link: function (token) { return this.parser.parseInline(token.tokens); },
          image: function (token) { return escapeHtml(token.text); }
        }
      });
    }
    return parser;
  }

  function prepared(text) {
    // the reply's text with, outside fenced code and code spans, a product's "*" and a "[1]:" line escaped
    var fenced = false;
    return text.split("\n").map(function (line) {
      if (FENCE.test(line)) { fenced = !fenced; return line; }
      if (fenced) return line;
      return line.split(CODE_SPAN).map(function (part, i) {
        return i % 2 ? part : part.replace(/(\d)\*(?=\d)/g, "$1\\*").replace(/^(\s{0,3})\[(\d+)\]:/, "$1\\[$2\\]:");
      }).join("");
    }).join("\n");
  }

  return function (el) {
    var body = el.querySelector(".text");
    if (!body || body.classList.contains("markdown")) return;
    if (!el.classList.contains("ai") || el.classList.contains("notice")) return;
    if (!window.marked || !window.DOMPurify) return;
    var html = markdown().parse(prepared(body.textContent)).trim();  // (no line break after the last block)
    body.innerHTML = window.DOMPurify.sanitize(html, { ALLOWED_TAGS: TAGS, ALLOWED_ATTR: [] });
    body.classList.add("markdown");
  };
})();
