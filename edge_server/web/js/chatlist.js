// Labels for the chat picker: short enough for a phone's select, and never two alike. Chats that begin with
// the same words got the same label ("Hello (1)" twice); each now carries when it last changed (the time
// today, else the date), and a number where even that is shared.
const SHORT = 12; // characters of the first question shown: with the widest time ("12:59 PM") and a number, a label fits a phone's picker

function short(title) {
  if (!title) return "Untitled";
  return title.length > SHORT ? `${title.slice(0, SHORT - 1).trimEnd()}\u2026` : title;
}

function when(seconds, now = new Date()) {
  const date = new Date(seconds * 1000);
  const today = date.toDateString() === now.toDateString();
  return today ? date.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" })
    : date.toLocaleDateString([], { day: "numeric", month: "short" });
}

// chats: newest first, as /chat/list gives them. Returns one label per chat, in the same order.
export function chatLabels(chats) {
  const labels = chats.map((c) => `${short(c.title)}, ${when(c.updated)}`);
  const seen = new Map();
  for (const label of labels) seen.set(label, (seen.get(label) || 0) + 1);
  const left = new Map(seen); // number the same labels from the oldest (#1), so a new chat does not renumber
  return labels.map((label) => {
    if (seen.get(label) === 1) return label;
    const n = left.get(label);
    left.set(label, n - 1);
    return `${label} #${n}`;
  });
}
