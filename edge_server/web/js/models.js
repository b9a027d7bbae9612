// The models screen: every model with its state, launch (with a context size), download progress,
// kill and delete. Cards are updated in place, so a poll does not reset a choice being made.
import { call, getJSON, sendJSON } from "./api.js";
import { $, bytes, confirmAction, el, notify } from "./util.js";

const CONTEXTS = [["-1", "Default context"], ["2048", "2K context"], ["4096", "4K context"],
  ["8192", "8K context"], ["16384", "16K context"], ["32768", "32K context"]];
const STATES = { absent: "Not downloaded", downloading: "Downloading", loading: "Loading", installed: "Downloaded",
  running: "Running" };

export class ModelsScreen {
  constructor(onChange, onLaunched) {
    this.onChange = onChange; // called with every listing (the chat screen picks running models from it)
    this.onLaunched = onLaunched; // called with a model's name once its launch succeeded
    this.cards = new Map();
    this.launching = new Set();
    this.timer = null;
    this.asked = 0; // listings asked for; only the newest answer is shown
  }

  async refresh() {
    const asked = ++this.asked;
    let listing;
    try {
      listing = await getJSON("/model/list");
    } catch (error) {
      if (error.status !== 401) notify(`Could not list the models: ${error.message}`);
      return null;
    }
    if (asked !== this.asked) return listing; // a newer listing is on its way
    this.render(listing);
    await this.onChange(listing);
    clearTimeout(this.timer); // one poll at a time, however many refreshes ran
    const moving = listing.models.some((m) => m.state === "downloading" || m.state === "loading");
    if (moving || this.launching.size) this.timer = setTimeout(() => this.refresh(), 700);
    return listing;
  }

  render(listing) {
    const parts = [];
    if (listing.free_memory_bytes !== null) parts.push(`Free memory ${bytes(listing.free_memory_bytes)}`);
    if (listing.free_disk_bytes !== null) parts.push(`free disk ${bytes(listing.free_disk_bytes)}`);
    $("resources").textContent = parts.join(" \u00b7 ");
    const list = $("model-list");
    // Cards keep their place once shown; the first time, what is on the device comes first.
    const rank = (m) => (m.state === "absent" ? 1 : 0);
    const models = this.cards.size ? listing.models : [...listing.models].sort((a, b) => rank(a) - rank(b));
    for (const model of models) {
      if (!this.cards.has(model.model_name)) {
        const card = this.card(model);
        this.cards.set(model.model_name, card);
        list.append(card.root);
      }
      this.update(this.cards.get(model.model_name), model);
    }
  }

  card(model) {
    const root = el("li", "model");
    root.dataset.name = model.model_name;
    const head = el("div", "head");
    head.append(el("strong", "name", model.model_name), el("span", `badge ${model.kind}`, model.kind));
    if (model.heavy) head.append(el("span", "badge", "full mode"));
    const description = el("p", "description", model.description || "");
    const state = el("p", "state");
    const progress = el("progress", "progress");
    progress.hidden = true;
    const error = el("p", "error");
    error.hidden = true;
    const context = el("select", "context");
    context.setAttribute("aria-label", `Context size for ${model.model_name}`);
    for (const [value, label] of CONTEXTS) {
      const option = el("option", "", label);
      option.value = value;
      context.append(option);
    }
    const launch = el("button", "primary launch", "Launch");
    const kill = el("button", "kill", "Stop");
    // A model named by its path in models.json is the user's file: delete forgets its chats, never the file.
    const remove = el("button", "danger delete", model.local ? "Delete chats" : "Delete");
    for (const button of [launch, kill, remove]) button.type = "button";
    launch.addEventListener("click", () => this.launch(model.model_name, Number(context.value)));
    kill.addEventListener("click", () => this.act("DELETE", "/model/kill", model.model_name));
    remove.addEventListener("click", async () => {
      const card = this.cards.get(model.model_name);
      const size = card.model.bytes_done ? ` (${bytes(card.model.bytes_done)})` : "";
      const name = model.model_name;
      const question = model.local
        ? `Delete ${name}'s chats? Its file is yours (a path in models.json): it stays on disk.`
        : `Delete ${name}'s files${size} and its chats?`;
      if (await confirmAction(question)) {
        const done = model.local ? `Deleted ${name}'s chats; its file stays on disk.`
          : `Deleted ${name}'s files and chats.`;
        if (await this.act("DELETE", "/model/delete", name)) notify(done);
      }
    });
    const actions = el("div", "actions");
    actions.append(context, launch, kill, remove);
    root.append(head, description, state, progress, error, actions);
    return { root, state, progress, error, launch, kill, remove, context, model };
  }

  update(card, model) {
    card.model = model;
    card.root.dataset.state = model.state;
    let text = STATES[model.state] || model.state;
    if (model.state === "downloading" && model.bytes_total) {
      text += ` ${bytes(model.bytes_done)} of ${bytes(model.bytes_total)}`;
    } else if (model.state === "running") {
      text += ` \u00b7 ${model.n_ctx} tokens of context`;
      if (model.queued) text += ` \u00b7 ${model.queued} waiting`;
      // Split over workers (EDGE_WORKERS): the devices it runs on; a lost worker needs a relaunch.
      if (model.workers) text += ` \u00b7 on this device + ${model.workers.join(", ")}`;
      if (model.lost) text = `A worker was lost: Relaunch it (${model.workers.join(", ")})`;
    } else if (model.bytes_total) {
      text += ` \u00b7 ${bytes(model.bytes_total)}`;
    }
    card.state.textContent = text;
    const downloading = model.state === "downloading";
    card.progress.hidden = !downloading;
    if (downloading && model.bytes_total) {
      card.progress.max = model.bytes_total;
      card.progress.value = model.bytes_done || 0;
    } else if (downloading) {
      card.progress.removeAttribute("value"); // size unknown: an indeterminate bar
    }
    const busy = this.launching.has(model.model_name) || downloading || model.state === "loading";
    card.launch.disabled = busy;
    card.launch.textContent = model.state === "running" ? "Relaunch" : busy ? "Launching\u2026" : "Launch";
    card.kill.hidden = !(model.state === "running" || downloading);
    card.kill.textContent = downloading ? "Cancel" : "Stop";
    card.remove.hidden = !(model.state === "installed" || model.state === "running");
  }

  showError(name, message) {
    const card = this.cards.get(name);
    card.error.textContent = message;
    card.error.hidden = !message;
  }

  async launch(name, nCtx) {
    this.showError(name, "");
    this.launching.add(name);
    const request = call("POST", "/model/launch", { json: { model_name: name, n_ctx: nCtx } });
    this.refresh(); // start polling the progress while the launch runs
    let launched = false;
    try {
      await request;
      launched = true;
    } catch (error) {
      this.showError(name, error.message);
    } finally {
      this.launching.delete(name);
      await this.refresh();
    }
    if (launched) await this.onLaunched(name); // a model is launched to talk to it: go to its chat
  }

  async act(method, path, name) {
    this.showError(name, "");
    let ok = true;
    try {
      await sendJSON(method, path, { model_name: name });
    } catch (error) {
      this.showError(name, error.message);
      ok = false;
    }
    await this.refresh();
    return ok;
  }
}
