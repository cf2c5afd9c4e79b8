// The console's shell: login, navigation (the URL's hash names the page) and the page in view.
// Each page is a function `(main, params) => stop`, where `stop` ends its timers.

import { ApiError, forget, get, remember, token } from "./api.js";
import { fill, h, say } from "./dom.js";
import { overview } from "./overview.js";
import { topology } from "./topology.js";
import { live } from "./live.js";
import { federation } from "./federation.js";
import { invitations } from "./invitations.js";
import { policy } from "./policy.js";
import { audit } from "./audit.js";

const PAGES = { overview, topology, live, federation, invitations, policy, audit };

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const logout = document.getElementById("logout");
let stop = () => {};

logout.addEventListener("click", () => {
  forget();
  route();
});
window.addEventListener("hashchange", route);
// A token refused on any call (revoked, rotated) ends the session.
window.addEventListener("meshfed:logout", route);
route();

/** Shows the page the hash names, or the login form without a token. */
async function route() {
  stop();
  stop = () => {};
  if (!token()) {
    nav.hidden = true;
    logout.hidden = true;
    fill(who);
    login();
    return;
  }
  nav.hidden = false;
  logout.hidden = false;
  const [name, ...params] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = PAGES[name] ? name : "overview";
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  fill(main);
  stop = PAGES[page](main, params) ?? (() => {});
  if (!who.textContent) {
    get("/node").then((n) => fill(who, `${n.mesh} / ${n.node}`)).catch(() => {});
  }
}

/** The login form: a token checked against `GET /v1/node` before it is kept. */
function login() {
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    placeholder: "admin token or admin-role component token", spellcheck: "false",
  });
  const message = h("div", { id: "login-message" });
  const form = h("form", { class: "card login", id: "login", onsubmit: async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    try {
      await get("/node", t);
    } catch (err) {
      say(message, "error", refusal(err));
      return;
    }
    remember(t);
    route();
  } },
  h("h1", {}, "meshfed console"),
  h("label", { for: "token" }, "Token"),
  input,
  h("p", { class: "muted" },
    "The admin token is in the node directory (admin.token); a component token needs the admin role. It is kept in this tab only."),
  h("button", { type: "submit", id: "login-button" }, "Log in"),
  message);
  fill(main, form);
  input.focus();
}

/** Why a login failed, in words. */
function refusal(err) {
  if (!(err instanceof ApiError)) return String(err);
  if (err.status === 403) return `This token has no admin role: ${err.message}`;
  if (err.status === 401) return `The node refused the token: ${err.message}`;
  return err.message;
}
