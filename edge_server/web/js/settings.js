// The settings sheet: sampling options and the API key, kept in this browser's localStorage.
import { getKey, setKey } from "./api.js";
import { $ } from "./util.js";

const STORE = "edge.settings";
const NUMBERS = { temperature: parseFloat, top_p: parseFloat, top_k: parseInt, max_new_tokens: parseInt,
  repeat_penalty: parseFloat, seed: parseInt };

function saved() {
  try {
    return JSON.parse(localStorage.getItem(STORE)) || {};
  } catch {
    return {};
  }
}

// The fields to send with a question: only those the user set (the server has defaults for the rest).
export function generationOptions() {
  const options = {};
  for (const [name, value] of Object.entries(saved())) {
    if (name in NUMBERS && Number.isFinite(value)) options[name] = value;
  }
  return options;
}

export function setupSettings(onKeyChanged) {
  const dialog = $("settings");
  const form = $("settings-form");
  const fill = (values) => {
    for (const name of Object.keys(NUMBERS)) form.elements[name].value = values[name] ?? "";
    form.elements.key.value = getKey();
  };
  $("open-settings").addEventListener("click", () => {
    fill(saved());
    dialog.showModal();
  });
  $("settings-cancel").addEventListener("click", () => dialog.close());
  $("settings-reset").addEventListener("click", () => fill({}));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    const values = {};
    for (const [name, parse] of Object.entries(NUMBERS)) {
      const value = parse(form.elements[name].value);
      if (Number.isFinite(value)) values[name] = value;
    }
    localStorage.setItem(STORE, JSON.stringify(values));
    const key = form.elements.key.value.trim();
    const changed = key !== getKey();
    setKey(key);
    dialog.close();
    if (changed) onKeyChanged();
  });
}

export function askForKey(onKey) {
  const dialog = $("key-dialog");
  if (dialog.open) return;
  const form = $("key-form");
  form.onsubmit = (event) => {
    event.preventDefault();
    setKey($("key-input").value.trim());
    dialog.close();
    onKey();
  };
  $("key-input").value = "";
  dialog.showModal();
}
