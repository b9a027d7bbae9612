// Calls to this server's own API: the key, JSON errors with their code and detail, streamed bodies.

const KEY = "edge.key";

export class ApiError extends Error {
  constructor(status, code, detail, retryAfter) {
    super(detail);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function getKey() {
  return localStorage.getItem(KEY) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

// The start-up QR code opens /#key=...: keep the key and take it out of the address bar (and history).
export function keyFromFragment() {
  const match = /(?:^#|&)key=([^&]*)/.exec(location.hash);
  if (!match) return false;
  try {
    setKey(decodeURIComponent(match[1]));
  } catch {
    setKey(match[1]); // a stray "%": take it as written
  }
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

let unauthorized = () => {};
export function whenUnauthorized(callback) {
  unauthorized = callback;
}

async function errorOf(response) {
  let detail = `${response.status} ${response.statusText}`.trim();
  let code = `http_${response.status}`;
  try {
    const body = await response.json();
    if (body && body.detail !== undefined) {
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      code = body.code || code;
    }
  } catch {
    // not JSON: keep the status line
  }
  const error = new ApiError(response.status, code, detail, Number(response.headers.get("Retry-After")) || 0);
  if (response.status === 401) unauthorized(error);
  return error;
}

// fetch with the key; a JSON body, a FormData body or none; throws ApiError for any status but 2xx.
export async function call(method, path, { json, form, query, signal, keepalive } = {}) {
  const headers = {};
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  const url = query ? `${path}?${new URLSearchParams(query)}` : path;
  const response = await fetch(url, { method, headers, body, signal, keepalive, cache: "no-store" });
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path, query) {
  return (await call("GET", path, { query })).json();
}

export async function sendJSON(method, path, json) {
  return (await call(method, path, { json })).json();
}
