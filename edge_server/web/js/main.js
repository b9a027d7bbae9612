// Boot: the key from the URL, the two screens, the settings sheet, the key prompt on 401.
import { keyFromFragment, whenUnauthorized } from "./api.js";
import { ChatScreen } from "./chat.js";
import { ModelsScreen } from "./models.js";
import { askForKey, setupSettings } from "./settings.js";
import { $ } from "./util.js";

const models = new ModelsScreen((listing) => chat.setModels(listing), async (name) => {
  show("chat", false);
  if (chat.model !== name) await chat.selectModel(name);
});
const chat = new ChatScreen(() => show("models"));

function show(name, refresh = true) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-pressed", String(tab.dataset.screen === name));
  }
  $("screen-chat").hidden = name !== "chat";
  $("screen-models").hidden = name !== "models";
  if (refresh) models.refresh();
}

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => show(tab.dataset.screen));
}

// A new key: everything the old one could not read.
const reload = async () => {
  await models.refresh();
  await chat.loadChats();
};
whenUnauthorized(() => askForKey(reload));
setupSettings(reload);
keyFromFragment();
addEventListener("hashchange", () => keyFromFragment() && reload()); // a /#key= link opened in this tab

// Start on the chat when a model is running, else where one can be launched.
const listing = await models.refresh();
show(listing && !listing.models.some((m) => m.state === "running") ? "models" : "chat", false);
performance.mark("edge-ready"); // bench/page_load.py reads it
document.body.dataset.ready = "true";
