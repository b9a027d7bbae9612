// The chat screen: the server's chats for a running model, streamed answers, stop, photos.
import { ApiError, call, getJSON, sendJSON } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { PhotoTray } from "./photos.js";
import { generationOptions } from "./settings.js";
import { $, confirmAction, copyButton, el, notify, randomId, sleep } from "./util.js";

const NEAR_BOTTOM = 48; // px: closer than this to the end counts as reading the latest

export class ChatScreen {
  constructor(goToModels) {
    this.running = []; // running models from the last listing
    this.model = null;
    this.chatId = null;
    this.chat = null; // the last history loaded
    this.live = null; // the answer streaming now
    this.lost = null; // an answer whose connection dropped: the server finishes it
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
    $("chat-menu").addEventListener("click", () => {
      const menu = $("chat-actions");
      menu.hidden = !menu.hidden;
      $("chat-menu").setAttribute("aria-expanded", String(!menu.hidden));
    });
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
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !matchMedia("(pointer: coarse)").matches) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
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
      if (document.visibilityState !== "visible") return;
      if (this.lost) this.recover();
      else if (!this.live && this.model) this.loadHistory(); // maybe answered on another device meanwhile
    });
  }

  // --- models and chats -------------------------------------------------------------------------

  setModels(listing) {
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
    $("composer").hidden = names.length === 0;
    if (!names.includes(this.model)) {
      const saved = localStorage.getItem("edge.model");
      this.selectModel(names.includes(saved) ? saved : names[0] || null);
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

  async selectModel(name) {
    if (this.live) return;
    this.model = name;
    this.chatId = null;
    this.messages.replaceChildren();
    this.showPhotoButtons();
    if (!name) return;
    localStorage.setItem("edge.model", name);
    $("model-pick").value = name;
    await this.loadChats();
  }

  async selectChat(chatId) {
    if (this.live) return;
    this.chatId = chatId;
    localStorage.setItem(`edge.chat.${this.model}`, chatId);
    $("chat-actions").hidden = true;
    await this.loadChats();
  }

  async loadChats() {
    let chats = [];
    try {
      chats = (await getJSON("/chat/list", { model_name: this.model })).chats;
    } catch (error) {
      this.showError(error);
    }
    if (!this.chatId) {
      const saved = localStorage.getItem(`edge.chat.${this.model}`);
      this.chatId = saved || (chats[0] && chats[0].chat_id) || randomId();
    }
    const options = chats.map((c) => [c.chat_id, `${c.title || "Untitled"} (${c.turns / 2 | 0})`]);
    if (!chats.some((c) => c.chat_id === this.chatId)) options.unshift([this.chatId, "New chat"]);
    $("chat-pick").replaceChildren(...options.map(([id, label]) => {
      const option = el("option", "", label);
      option.value = id;
      return option;
    }));
    $("chat-pick").value = this.chatId;
    await this.loadHistory();
  }

  target() {
    return { model_name: this.model, chat_id: this.chatId };
  }

  async loadHistory() {
    if (!this.model || this.live) return null;
    const { model, chatId } = this;
    let chat;
    try {
      chat = await getJSON("/chat/getchathistory", this.target());
    } catch (error) {
      this.showError(error);
      return null;
    }
    if (model !== this.model || chatId !== this.chatId || this.live) return chat; // switched meanwhile
    this.chat = chat;
    this.messages.replaceChildren(...chat.turns.map((turn) => this.message(turn.role, turn.content, turn.images)));
    if (chat.answering) this.messages.append(this.note("The server is still answering here\u2026"));
    this.stick = true;
    this.scrollToEnd();
    return chat;
  }

  async editSystemPrompt() {
    $("chat-actions").hidden = true;
    const dialog = $("system-dialog");
    $("system-text").value = (this.chat && this.chat.system_prompt) || "";
    $("system-cancel").onclick = () => dialog.close();
    $("system-form").onsubmit = async (event) => {
      event.preventDefault();
      try {
        await sendJSON("POST", "/chat/addsystemprompt", { ...this.target(), system_prompt: $("system-text").value });
        dialog.close();
        await this.loadChats();
      } catch (error) {
        notify(error.message);
      }
    };
    dialog.showModal();
  }

  async clear() {
    $("chat-actions").hidden = true;
    if (!(await confirmAction("Clear this chat's messages? Its system prompt stays.", "Clear"))) return;
    await this.chatAction("/chat/clearchat");
  }

  async deleteChat() {
    $("chat-actions").hidden = true;
    if (!(await confirmAction("Delete this chat and its system prompt?"))) return;
    if (await this.chatAction("/chat/delete")) {
      localStorage.removeItem(`edge.chat.${this.model}`);
      this.chatId = null;
      await this.loadChats();
    }
  }

  async chatAction(path) {
    try {
      await sendJSON("DELETE", path, this.target());
    } catch (error) {
      notify(error.message);
      return false;
    }
    await this.loadChats();
    return true;
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
    for (const id of ["model-pick", "chat-pick", "new-chat", "chat-menu"]) $(id).disabled = Boolean(live);
  }

  // --- asking -----------------------------------------------------------------------------------

  async send() {
    const text = this.prompt.value.trim();
    if (!text || !this.model) return;
    const photos = this.photos.take();
    this.prompt.value = "";
    this.fitPrompt();
    const turns = this.chat ? this.chat.turns.length : 0;
    this.messages.append(this.message("user", text, photos.length));
    const answer = this.message("assistant", "");
    answer.classList.add("streaming");
    this.messages.append(answer);
    this.stick = true;
    this.scrollToEnd();
    const live = { controller: new AbortController(), model: this.model, chatId: this.chatId, turns, stopped: false };
    this.setLive(live);
    const status = this.note("");
    answer.append(status);
    let received = false;
    try {
      const response = await this.ask(text, photos, live, status);
      status.textContent = "";
      received = await this.read(response, answer, live.sent);
    } catch (error) {
      if (live.stopped) {
        status.textContent = "Stopped.";
      } else if (error instanceof ApiError) {
        status.textContent = error.message;
        status.className = "error";
        if (!received && !this.prompt.value) this.prompt.value = text; // nothing lost: ask again
      } else {
        // The connection dropped (a locked screen, a network change): the server finishes the answer.
        status.textContent = "The connection dropped; the server is finishing this answer\u2026";
        this.lost = live;
        if (document.visibilityState === "visible") this.recover();
      }
    } finally {
      answer.classList.remove("streaming");
      answer.dataset.done = "true";
      this.setLive(null);
      if (!this.lost) this.refreshAfterAnswer(live);
    }
  }

  async refreshAfterAnswer(live) {
    if (live.model !== this.model || live.chatId !== this.chatId) return;
    try {
      this.chat = await getJSON("/chat/getchathistory", this.target());
    } catch {
      return;
    }
    this.loadChatsQuietly();
  }

  async loadChatsQuietly() {
    const chats = (await getJSON("/chat/list", { model_name: this.model }).catch(() => ({ chats: [] }))).chats;
    const current = chats.find((c) => c.chat_id === this.chatId);
    const option = [...$("chat-pick").options].find((o) => o.value === this.chatId);
    if (current && option) option.textContent = `${current.title || "Untitled"} (${current.turns / 2 | 0})`;
  }

  // POST the question; while the model is busy, say so and try again after Retry-After.
  async ask(text, photos, live, status) {
    const fields = { model_name: live.model, chat_id: live.chatId, prompt: text, on_disconnect: "finish",
      ...generationOptions() };
    let request;
    if (photos.length) {
      const form = new FormData();
      for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
      photos.forEach((photo, i) => form.append("image_files", photo.blob, `photo-${i + 1}.jpg`));
      request = { form };
    } else {
      request = { json: fields };
    }
    const path = photos.length ? "/generate/fromimagetext" : "/generate/fromtext";
    for (;;) {
      try {
        live.sent = performance.now(); // time to first token counts from the request that is answered
        return await call("POST", path, { ...request, signal: live.controller.signal });
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 503)) throw error;
        for (let left = error.retryAfter || 2; left > 0; left -= 1) {
          status.textContent = `The model is busy with other questions. Trying again in ${left} s\u2026`;
          await sleep(1000, live.controller.signal);
        }
        status.textContent = "Trying again\u2026";
      }
    }
  }

  async read(response, answer, sent) {
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
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const piece = decoder.decode(value, { stream: true });
      if (!piece) continue;
      const now = performance.now();
      if (!pieces) first = now;
      pieces += 1;
      text += piece;
      this.showStats(first - sent, pieces, now - first);
      if (!frame) frame = requestAnimationFrame(draw);
    }
    text += decoder.decode();
    if (frame) cancelAnimationFrame(frame);
    draw();
    return pieces > 0;
  }

  // Pieces arrive about one per token (a slow network may join a few).
  showStats(ttft, pieces, elapsed) {
    const parts = [`first token ${(ttft / 1000).toFixed(2)} s`, `${pieces} tokens`];
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

  // After a dropped connection: wait until the server has stored the answer, then show the chat.
  async recover() {
    const lost = this.lost;
    if (!lost || lost.recovering) return;
    lost.recovering = true;
    const target = { model_name: lost.model, chat_id: lost.chatId };
    try {
      for (let tries = 0; tries < 3600; tries += 1) {
        const chat = await getJSON("/chat/getchathistory", target).catch(() => null);
        if (chat && !chat.answering) break;
        await sleep(1000);
      }
    } finally {
      this.lost = null;
    }
    if (lost.model === this.model && lost.chatId === this.chatId) await this.loadHistory();
  }
}
