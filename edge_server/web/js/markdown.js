// Answers as Markdown, safely: raw HTML stays text, images are never fetched, and DOMPurify
// keeps only plain formatting and http(s)/mailto links (so <img onerror> and javascript: stay inert).
import { marked } from "../vendor/marked.esm.js";
import { copyButton } from "./util.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escape = (text) => text.replace(/[&<>"']/g, (c) => ESCAPES[c]);

marked.use({
  gfm: true,
  breaks: true,
  renderer: {
    html: (token) => escape(token.text),
    image: (token) => escape(`![${token.text}](${token.href})`),
  },
});

const PURIFY = {
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "svg", "math", "iframe",
    "video", "audio", "source", "picture", "link", "meta"],
  FORBID_ATTR: ["style", "src", "srcset", "action", "formaction"],
};

let hooked = false;
function purify(html) {
  const purifier = window.DOMPurify;
  if (!hooked) {
    purifier.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
    hooked = true;
  }
  return purifier.sanitize(html, PURIFY);
}

export function renderMarkdown(target, text) {
  target.innerHTML = purify(marked.parse(text));
  for (const pre of target.querySelectorAll("pre")) {
    const code = pre.querySelector("code") || pre;
    pre.prepend(copyButton("Copy", () => code.textContent));
  }
}
