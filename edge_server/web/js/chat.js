// The chat screen: the server's chats for a running model, streamed answers, stop, photos.
import { ApiError, call, getJSON, sendJSON } from "./api.js";
import { chatLabels } from "./chatlist.js";
import { renderMarkdown } from "./markdown.js";
import { PhotoTray } from "./photos.js";
import { generationOptions } from "./settings.js";
import { $, confirmAction, copyButton, el, notify, randomId, sleep } from "./util.js";

const NEAR_BOTTOM = 48; // px: closer than this to the end counts as reading the latest
const CHAT_CONTROLS = ["model-pick", "chat-pick", "new-chat", "chat-menu", "system-prompt", "clear-chat", "delete-chat"];

const sameChat = (a, b) => a && b && a.turns.length === b.turns.length && a.answering === b.answering
  && a.system_prompt === b.system_prompt && JSON.stringify(a.turns.at(-1)) === JSON.stringify(b.turns.at(-1));

export class ChatScreen {
  constructor(goToModels) {
    this.running = []; // running models from the last listing
    this.model = null;
    this.chatId = null;
    this.chat = null; // the history on screen, as the server gave it
    this.live = null; // the answer streaming now
    this.waiting = null; // an answer the server is finishing without us (dropped connection, another device)
    this.stick = true; // follow new text while the reader is at the bottom
    this.photos = new PhotoTray();
    this.messages = $("messages");
    this.prompt = $("prompt");
    this.wire(goToModels);
  }

  wire(goToModels) {
    $("go-models").addEventListener("click", goToModels);
    $("model-pick").addEventListener("change", (e) => this.selectModel(e.target.value));
    $("chat-pick").addEventListener("change", (e) => this.selectChat(e.target.value));
    $("new-chat").addEventListener("click", () => this.selectChat(randomId()));
    $("chat-menu").addEventListener("click", () => this.menu($("chat-actions").hidden));
    $("system-prompt").addEventListener("click", () => this.editSystemPrompt());
    $("clear-chat").addEventListener("click", () => this.clear());
    $("delete-chat").addEventListener("click", () => this.deleteChat());
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      if (this.live) this.stop();
      else this.send();
    });
    this.prompt.addEventListener("keydown", (e) => {
      // A phone's Enter makes a new line (its Send button is at hand); a keyboard's Enter sends.
      if (e.key !== "Enter" || e.shiftKey || e.isComposing || matchMedia("(pointer: coarse)").matches) return;
      e.preventDefault();
      if (!this.live) $("composer").requestSubmit(); // Enter never stops an answer: that is the Stop button's job
    });
    this.prompt.addEventListener("input", () => this.fitPrompt());
    this.messages.addEventListener("scroll", () => {
      this.stick = this.atBottom();
      if (this.stick) $("jump").hidden = true;
    }, { passive: true });
    $("jump").addEventListener("click", () => {
      this.stick = true;
      this.scrollToEnd();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.checkBack();
    });
  }

  menu(open) {
    $("chat-actions").hidden = !open;
    $("chat-menu").setAttribute("aria-expanded", String(open));
  }

  // --- models and chats -------------------------------------------------------------------------

  // Returns when the chosen model's chat is on screen.
  async setModels(listing) {
    this.running = listing.models.filter((m) => m.state === "running");
    const pick = $("model-pick");
    const names = this.running.map((m) => m.model_name);
    if (pick.options.length !== names.length || names.some((n, i) => pick.options[i].value !== n)) {
      pick.replaceChildren(...names.map((name) => {
        const option = el("option", "", name);
        option.value = name;
        return option;
      }));
    }
    $("no-model").hidden = names.length > 0;
    for (const node of document.querySelectorAll(".chat-bar, #composer")) node.hidden = names.length === 0;
    if (!names.length) this.menu(false);
    if (!names.includes(this.model)) {
      const saved = localStorage.getItem("edge.model");
      await this.selectModel(names.includes(saved) ? saved : names[0] || null);
    } else {
      pick.value = this.model;
      this.showPhotoButtons();
    }
  }

  showPhotoButtons() {
    const model = this.running.find((m) => m.model_name === this.model);
    $("photo-buttons").hidden = !(model && model.vision);
    if (!model || !model.vision) this.photos.take();
  }

  forgetScreen() {
    this.chat = null;
    this.waiting = null;
    this.messages.replaceChildren();
    $("stats").textContent = "";
  }

  async selectModel(name) {
    if (this.live) return;
    this.model = name;
    this.chatId = null;
    this.forgetScreen();
    this.showPhotoButtons();
    if (!name) return;
    localStorage.setItem("edge.model", name);
    $("model-pick").value = name;
    await this.loadChats();
  }

  async selectChat(chatId) {
    if (this.live || !this.model) return;
    this.chatId = chatId;
    localStorage.setItem(`edge.chat.${this.model}`, chatId);
    this.menu(false);
    this.forgetScreen();
    await this.loadChats();
  }

  // The chat list for the picker; then, unless `quiet`, the chosen chat's history.
  async loadChats({ quiet = false } = {}) {
    const model = this.model;
    if (!model) return;
    let chats;
    try {
      chats = (await getJSON("/chat/list", { model_name: model })).chats;
    } catch (error) {
      this.showError(error);
      chats = [];
    }
    if (model !== this.model) return; // switched meanwhile
    if (!this.chatId) {
      const saved = localStorage.getItem(`edge.chat.${model}`);
      this.chatId = saved || (chats[0] && chats[0].chat_id) || randomId();
    }
    const labels = chatLabels(chats);
    const options = chats.map((c, i) => [c.chat_id, labels[i], c.title]);
    if (!chats.some((c) => c.chat_id === this.chatId)) options.unshift([this.chatId, "New chat", ""]);
    $("chat-pick").replaceChildren(...options.map(([id, label, title]) => {
      const option = el("option", "", label);
      option.value = id;
      if (title) option.title = title; // the whole first question
      return option;
    }));
    $("chat-pick").value = this.chatId;
    if (!quiet) await this.loadHistory();
  }

  target() {
    return { model_name: this.model, chat_id: this.chatId };
  }

  async fetchHistory() {
    const { model, chatId } = this;
    try {
      const chat = await getJSON("/chat/getchathistory", { model_name: model, chat_id: chatId });
      return model === this.model && chatId === this.chatId ? chat : null; // null: switched meanwhile
    } catch (error) {
      this.showError(error);
      return null;
    }
  }

  async loadHistory() {
    if (!this.model || !this.chatId || this.live) return;
    const chat = await this.fetchHistory();
    if (chat && !this.live) this.show(chat);
  }

  show(chat) {
    this.chat = chat;
    const last = chat.turns.length - 1;
    this.messages.replaceChildren(...chat.turns.map((turn, i) => {
      const item = this.message(turn.role, turn.content, turn.images);
      if (turn.finish_reason === "length") this.markCut(item, turn.completion_tokens, i === last);
      return item;
    }));
    if (!chat.turns.length && !chat.answering) this.messages.append(this.emptyHint());
    if (chat.answering) {
      this.messages.append(this.note("The server is answering here\u2026", "note waiting"));
      this.wait({ model: this.model, chatId: this.chatId, turns: chat.turns.length });
    }
    this.stick = true;
    this.scrollToEnd();
  }

  // Back on the page (the screen was locked, the tab hidden): show what changed meanwhile.
  async checkBack() {
    if (!this.model || !this.chatId || this.waiting) return;
    const chat = await this.fetchHistory();
    if (!chat) return;
    if (this.live) {
      // A connection that died quietly while asleep: the server has stored the answer, stop waiting for bytes.
      if (!chat.answering && chat.turns.length >= this.live.turns + 2) this.live.controller.abort();
    } else if (!sameChat(chat, this.chat)) {
      this.show(chat);
    }
  }

  async editSystemPrompt() {
    this.menu(false);
    if (!this.chat) return;
    const dialog = $("system-dialog");
    $("system-text").value = this.chat.system_prompt || "";
    $("system-cancel").onclick = () => dialog.close();
    const target = this.target();
    $("system-form").onsubmit = async (event) => {
      event.preventDefault();
      try {
        await sendJSON("POST", "/chat/addsystemprompt", { ...target, system_prompt: $("system-text").value });
        dialog.close();
        await this.loadChats();
      } catch (error) {
        notify(error.message);
      }
    };
    dialog.showModal();
  }

  async clear() {
    this.menu(false);
    if (await confirmAction("Clear this chat's messages? Its system prompt stays.", "Clear")) {
      await this.chatAction("/chat/clearchat");
    }
  }

  async deleteChat() {
    this.menu(false);
    if (await confirmAction("Delete this chat and its system prompt?")) {
      await this.chatAction("/chat/delete", () => {
        localStorage.removeItem(`edge.chat.${this.model}`);
        this.chatId = null; // the newest other chat, or a new one
      });
    }
  }

  async chatAction(path, after) {
    if (!this.model || this.live) return;
    try {
      await sendJSON("DELETE", path, this.target());
    } catch (error) {
      notify(error.message);
      return;
    }
    if (after) after();
    await this.loadChats();
  }

  // --- messages ---------------------------------------------------------------------------------

  message(role, text, images) {
    const item = el("article", `msg ${role}`);
    const body = el("div", "body");
    item.append(body);
    if (images) item.prepend(el("p", "images", `\u{1F4F7} ${images} photo${images > 1 ? "s" : ""}`));
    if (role === "assistant") {
      renderMarkdown(body, text);
      item.dataset.text = text;
      const actions = el("div", "actions");
      actions.append(copyButton("Copy answer", () => item.dataset.text));
      item.append(actions);
    } else {
      body.textContent = text;
    }
    return item;
  }

  note(text, className = "note") {
    return el("p", className, text);
  }

  // A new chat showed a blank screen: say what to do.
  emptyHint() {
    const hint = el("div", "empty-chat");
    hint.append(el("p", "", `Nothing here yet. Type a question below and press Send: ${this.model}'s answer `
      + "streams in, and Stop ends it."), el("p", "", "\u22ee sets this chat's system prompt; + starts another chat."));
    return hint;
  }

  // An answer cut at its token limit says so; the newest offers to go on (a new turn asking to continue).
  markCut(item, tokens, last) {
    const note = el("p", "note cut", `Stopped at ${tokens} tokens (the limit for one answer).`);
    if (last) {
      const more = el("button", "continue", "Continue");
      more.type = "button";
      more.addEventListener("click", () => {
        if (this.live) return;
        this.prompt.value = "Continue";
        this.send();
      });
      note.append(" ", more);
    }
    item.querySelector(".actions").before(note);
  }

  atBottom() {
    const m = this.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < NEAR_BOTTOM;
  }

  scrollToEnd() {
    this.messages.scrollTop = this.messages.scrollHeight;
    $("jump").hidden = true;
  }

  follow() {
    if (this.stick) this.scrollToEnd();
    else $("jump").hidden = false;
  }

  showError(error) {
    if (error instanceof ApiError && error.status === 401) return; // the key prompt is up
    notify(error.message);
  }

  fitPrompt() {
    this.prompt.style.height = "auto";
    this.prompt.style.height = `${Math.min(this.prompt.scrollHeight, 160)}px`;
  }

  setLive(live) {
    this.live = live;
    const send = $("send");
    send.textContent = live ? "Stop" : "Send";
    send.classList.toggle("danger", Boolean(live));
    send.classList.toggle("primary", !live);
    if (live) this.menu(false);
    for (const id of CHAT_CONTROLS) $(id).disabled = Boolean(live);
  }

  // Put an unanswered question back in the box, with its photos, so nothing typed is lost.
  giveBack(text, photos) {
    if (!this.prompt.value) this.prompt.value = text;
    this.photos.put(photos);
    this.fitPrompt();
  }

  // --- asking -----------------------------------------------------------------------------------

  async send() {
    const text = this.prompt.value.trim();
    if (!text || !this.model || !this.chatId) return;
    const photos = this.photos.take();
    this.prompt.value = "";
    this.fitPrompt();
    const turns = this.chat ? this.chat.turns.length : 0;
    this.messages.querySelector(".empty-chat")?.remove();
    for (const old of this.messages.querySelectorAll(".cut .continue")) old.remove(); // only the newest goes on
    this.messages.append(this.message("user", text, photos.length));
    const answer = this.message("assistant", "");
    answer.classList.add("streaming");
    this.messages.append(answer);
    this.stick = true;
    this.scrollToEnd();
    const live = { controller: new AbortController(), model: this.model, chatId: this.chatId, turns, text, photos,
      stopped: false, received: false };
    this.setLive(live);
    const status = this.note("");
    answer.append(status);
    try {
      const response = await this.ask(live, status);
      status.textContent = "";
      await this.read(response, answer, live);
    } catch (error) {
      if (live.stopped) {
        status.textContent = "Stopped.";
        if (!live.received) this.giveBack(text, photos);
      } else if (error instanceof ApiError) {
        status.textContent = error.message;
        status.className = "error";
        this.giveBack(text, photos);
      } else {
        // The connection dropped (a locked screen, a network change): the server finishes the answer.
        status.textContent = "The connection dropped; the server is finishing this answer\u2026";
        status.className = "note waiting";
        this.waiting = live;
      }
    } finally {
      answer.classList.remove("streaming");
      this.follow(); // its Copy row appears now: keep the end in view for a reader who was following
      this.setLive(null);
    }
    if (this.waiting === live) {
      this.wait(live);
    } else if (live.model === this.model && live.chatId === this.chatId) {
      this.chat = await this.fetchHistory(); // what the server stored, for the next turn and the editor
      const stored = this.chat && this.chat.turns.at(-1);
      if (stored && stored.role === "assistant" && stored.finish_reason === "length"
          && this.chat.turns.length === turns + 2) {
        this.markCut(answer, stored.completion_tokens, true);
        this.follow();
      }
      await this.loadChats({ quiet: true }); // the chat's title and count
    }
    answer.dataset.done = "true";
  }

  // POST the question; while the model is busy, say so and try again after Retry-After.
  async ask(live, status) {
    const fields = { model_name: live.model, chat_id: live.chatId, prompt: live.text, on_disconnect: "finish",
      ...generationOptions() };
    let request;
    if (live.photos.length) {
      const form = new FormData();
      for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
      live.photos.forEach((photo, i) => form.append("image_files", photo.blob, `photo-${i + 1}.jpg`));
      request = { form };
    } else {
      request = { json: fields };
    }
    const path = live.photos.length ? "/generate/fromimagetext" : "/generate/fromtext";
    for (;;) {
      live.sent = performance.now(); // time to first token counts from the request that is answered
      const waiting = setInterval(() => this.showStats(performance.now() - live.sent, 0, 0), 100);
      try {
        return await call("POST", path, { ...request, signal: live.controller.signal });
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 503)) throw error;
        for (let left = error.retryAfter || 2; left > 0; left -= 1) {
          status.textContent = `The model is busy with other questions. Trying again in ${left} s\u2026`;
          await sleep(1000, live.controller.signal);
        }
        status.textContent = "Trying again\u2026";
      } finally {
        clearInterval(waiting);
      }
    }
  }

  async read(response, answer, live) {
    const body = answer.querySelector(".body");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let pieces = 0;
    let first = 0;
    let frame = 0;
    const draw = () => {
      frame = 0;
      renderMarkdown(body, text);
      answer.dataset.text = text;
      this.follow();
    };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const piece = decoder.decode(value, { stream: true });
        if (!piece) continue;
        const now = performance.now();
        if (!pieces) first = now;
        pieces += 1;
        live.received = true;
        text += piece;
        this.showStats(first - live.sent, pieces, now - first);
        if (!frame) frame = requestAnimationFrame(draw);
      }
      text += decoder.decode();
    } finally {
      if (frame) cancelAnimationFrame(frame);
      draw();
    }
  }

  // Time to first token (ticking until it comes), then tokens and speed. The server sends one piece per
  // token; a slow network may join a few, so the count can run low, never high.
  showStats(ttft, pieces, elapsed) {
    const parts = [`${pieces ? "first token" : "waiting"} ${(ttft / 1000).toFixed(2)} s`];
    if (pieces) parts.push(`${pieces} tokens`);
    if (pieces > 1 && elapsed > 0) parts.push(`${((pieces - 1) / (elapsed / 1000)).toFixed(1)} tokens/s`);
    $("stats").textContent = parts.join(" \u00b7 ");
  }

  stop() {
    const live = this.live;
    live.stopped = true;
    // The answer was asked to finish if the connection drops, so ask the server to stop it, then hang up.
    call("POST", "/generate/stop", { json: { model_name: live.model, chat_id: live.chatId }, keepalive: true })
      .catch(() => {});
    live.controller.abort();
  }

  // The server is finishing an answer without us: poll until it is stored, then show the chat.
  async wait(pending) {
    if (this.waiting && this.waiting !== pending) return;
    this.waiting = pending;
    if (pending.polling) return;
    pending.polling = true;
    const target = { model_name: pending.model, chat_id: pending.chatId };
    let chat = null;
    for (let tries = 0; tries < 3600 && this.waiting === pending; tries += 1) {
      try {
        chat = await getJSON("/chat/getchathistory", target);
        if (!chat.answering) break;
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) break; // the key prompt is up; it reloads
      }
      await sleep(1000);
    }
    if (this.waiting !== pending) return; // the reader moved to another chat
    this.waiting = null;
    if (pending.text && chat && chat.turns.length < pending.turns + 2) {
      this.giveBack(pending.text, pending.photos); // the question never reached the server
      notify("The question did not reach the server. It is back in the box: send it again.");
    }
    if (pending.model === this.model && pending.chatId === this.chatId) await this.loadHistory();
  }
}
