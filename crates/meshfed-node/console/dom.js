// Building the page: elements and text nodes only. No string is ever parsed as HTML, so a
// mesh id or a reason a peer chose is always shown as text.

/** An element `tag` with `attrs` (`class`, `on*` listeners, other attributes) and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element `tag` with `attrs` and children. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value") {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table with `headers` and `rows` (arrays of cells: text or nodes). */
export function table(headers, rows, attrs = {}) {
  return h("div", { class: "scroll" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}

/** A definition list of `[term, value]` pairs; nested objects become nested lists. */
export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, show(v))]));
}

/** Any JSON value as something readable. */
export function show(v) {
  if (v instanceof Node) return v;
  if (v === null || v === undefined) return h("span", { class: "muted" }, "—");
  if (Array.isArray(v)) {
    if (v.length === 0) return h("span", { class: "muted" }, "none");
    if (v.every((x) => typeof x !== "object" || x === null)) return v.join(", ");
    return h("ul", { class: "plain" }, v.map((x) => h("li", {}, show(x))));
  }
  if (typeof v === "object") return facts(Object.entries(v).map(([k, x]) => [label(k), x]));
  if (typeof v === "boolean") return v ? "yes" : "no";
  return String(v);
}

/** `snake_case` as words. */
export function label(key) {
  return key.replaceAll("_", " ");
}

/** A status or health word as a coloured badge. */
export function badge(word) {
  const text = word ?? "unknown";
  return h("span", { class: `badge ${tone(text)}`, "data-status": text }, text);
}

/** The colour class of a status or health word. */
export function tone(word) {
  switch (word) {
    case "active": case "healthy": case "closed": case true: return "good";
    case "degraded": case "renegotiating": case "reestablishing": case "negotiating":
    case "suspended": case "half-open": return "warn";
    case "unreachable": case "open": case false: return "bad";
    default: return String(word).startsWith("terminated") ? "off" : "warn";
  }
}

/** A number with at most `digits` decimals, or a dash. */
export function num(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  return Number(v).toLocaleString("en", { maximumFractionDigits: digits });
}

/** Bytes as B, KiB, MiB. */
export function bytes(n) {
  if (n === null || n === undefined) return "—";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A message line (`ok` or `error`) in `el`. */
export function say(el, kind, text) {
  return fill(el, h("p", { class: `note ${kind}`, role: kind === "error" ? "alert" : "status" }, text));
}

/**
 * Asks the operator to confirm `question` in a modal dialog; resolves to the value of the
 * confirm button's `extra` inputs (an object) when confirmed, or null when cancelled.
 */
export function confirmDialog(title, question, confirmText, extras = []) {
  return new Promise((resolve) => {
    const inputs = extras.map((x) => ({
      name: x.name,
      input: h("input", { type: "checkbox", id: `confirm-${x.name}` }),
      text: x.text,
    }));
    const ok = h("button", { type: "button", class: "danger", id: "confirm-ok" }, confirmText);
    const cancel = h("button", { type: "button", id: "confirm-cancel" }, "Cancel");
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, question),
      inputs.map((x) => h("label", { class: "check" }, x.input, " ", x.text)),
      h("div", { class: "actions" }, cancel, ok));
    const close = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    ok.addEventListener("click", () =>
      close(Object.fromEntries(inputs.map((x) => [x.name, x.input.checked]))));
    cancel.addEventListener("click", () => close(null));
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); close(null); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}
