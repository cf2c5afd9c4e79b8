// The console's only way to the node: the public `/v1` API, with the bearer token the operator
// logged in with (kept in this tab's sessionStorage only).

const KEY = "meshfed.console.token";

/** The token in use, or null before login. */
export function token() {
  return sessionStorage.getItem(KEY);
}

/** Keeps `t` for this tab. */
export function remember(t) {
  sessionStorage.setItem(KEY, t);
}

/** Forgets the token. */
export function forget() {
  sessionStorage.removeItem(KEY);
}

/** An answer other than 2xx: its status, the API's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** `method /v1{path}` with the token and an optional JSON body; resolves to the JSON answer. */
export async function call(method, path, body, t = token()) {
  const headers = { Accept: "application/json" };
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", `the node did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401 && t && t === token()) {
    forget();
    window.dispatchEvent(new Event("meshfed:logout"));
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(response.status, error.code ?? String(response.status),
      error.message ?? (text.trim() || response.statusText));
  }
  return data;
}

/** `GET /v1{path}`. */
export const get = (path, t) => call("GET", path, undefined, t);

/** `POST /v1{path}` with `body`. */
export const post = (path, body) => call("POST", path, body);

/** Path segment `s`, escaped. */
export const seg = (s) => encodeURIComponent(s);

/** `GET /v1/stats`, or null where the node has no live statistics (404). */
export async function stats() {
  try {
    return await get("/stats");
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

/**
 * Runs `step` now and then `ms` after each run ends (never two at once) until the returned
 * function is called. A failing step is handed to `failed` and the polling goes on.
 */
export function poll(ms, step, failed = () => {}) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    try {
      await step();
    } catch (e) {
      if (!stopped) failed(e);
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
