// An AI reply's Markdown as formatted text, for the widget (static/chat.js) and the coach's dashboard
// (static/dashboard.js): window.renderMarkdown(el) renders the `.text` of a `.msg.ai` element that is no notice
// (marked: CommonMark with GitHub's tables, lists and line breaks), cleaned by DOMPurify to TAGS with no attribute, so
// a model's link, image or HTML (a poisoned document or an injected prompt can ask for one) shows as its text only
// and nothing of it runs. The client's and the coach's messages and notices stay plain text, as typed. A numbered
// source line ("[1]: …") is kept as text, not taken for a link reference and dropped. Loaded after
// static/vendor/marked.umd.js and static/vendor/purify.min.js; without them the text stays as it is.
window.renderMarkdown = (function () {
  "use strict";
  var TAGS = ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "hr",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"];

  return function (el) {
    var body = el.querySelector(".text");
    if (!body || body.classList.contains("markdown")) return;
    if (!el.classList.contains("ai") || el.classList.contains("notice")) return;
    if (!window.marked || !window.DOMPurify) return;
    var source = body.textContent.replace(/^(\s{0,3})\[(\d+)\]:/gm, "$1\\[$2\\]:");
    var html = window.marked.parse(source, { gfm: true, breaks: true, async: false });
    body.innerHTML = window.DOMPurify.sanitize(html, { ALLOWED_TAGS: TAGS, ALLOWED_ATTR: [] });
    body.classList.add("markdown");
  };
})();
