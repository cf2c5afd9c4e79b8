// Invitations: create one for a mesh (the token is shown once, with a copy button) and join a
// mesh by pasting the token it sent.

import { post, seg } from "./api.js";
import { fill, h, say } from "./dom.js";

export function invitations(main) {
  const peer = h("input", { id: "invite-peer", required: true, placeholder: "supplier-b", pattern: "[a-z0-9][a-z0-9-]{0,62}", spellcheck: "false" });
  const ttl = h("input", { id: "invite-ttl", value: "1h", spellcheck: "false" });
  const created = h("div", { id: "invite-result" });
  const invite = h("form", { class: "card", id: "invite", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const r = await post("/federations/invite", { peer: peer.value.trim(), ttl: ttl.value.trim() || undefined });
      const token = h("textarea", { id: "invite-token", readonly: true, rows: 6, spellcheck: "false" });
      token.value = r.token;
      const copied = h("span", { class: "muted", id: "copied", role: "status" });
      const copy = h("button", { type: "button", id: "copy-token", onclick: async () => {
        token.select();
        try {
          await navigator.clipboard.writeText(r.token);
          copied.textContent = "Copied.";
        } catch {
          copied.textContent = "Selected: copy it with Ctrl+C.";
        }
      } }, "Copy");
      fill(created,
        h("p", { class: "note ok" }, `Invitation ${r.token_id} for mesh ${r.peer}, valid until ${r.expires}. `,
          h("strong", {}, "This token is shown only once:"), " send it to the operator of ", r.peer, "."),
        token, h("div", { class: "actions" }, copy, copied));
    } catch (err) {
      say(created, "error", `No invitation: ${err.message}`);
    }
  } },
  h("h2", {}, "Invite a mesh"),
  h("label", { for: "invite-peer" }, "Peer mesh id"), peer,
  h("label", { for: "invite-ttl" }, "Valid for"), ttl,
  h("div", { class: "actions" }, h("button", { type: "submit", id: "invite-button" }, "Create invitation")),
  created);

  const pasted = h("textarea", { id: "join-token", rows: 4, required: true, spellcheck: "false", placeholder: "Paste the invitation token" });
  const via = h("input", { id: "join-via", spellcheck: "false", placeholder: "optional: a broker mesh this node federates with" });
  const joined = h("div", { id: "join-result" });
  const join = h("form", { class: "card", id: "join", onsubmit: async (e) => {
    e.preventDefault();
    const button = join.querySelector("button[type=submit]");
    button.disabled = true;
    say(joined, "info", "Joining…");
    try {
      const body = { token: pasted.value.trim() };
      if (via.value.trim()) body.via = via.value.trim();
      const f = await post("/federations/join", body);
      pasted.value = "";
      fill(joined, h("p", { class: "note ok" }, `Joined federation `,
        h("a", { href: `#/federation/${seg(f.id)}`, id: "joined-federation" }, f.id), ` with mesh ${f.peer} (${f.status}).`));
    } catch (err) {
      say(joined, "error", `Could not join: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  } },
  h("h2", {}, "Join a mesh"),
  h("label", { for: "join-token" }, "Invitation token"), pasted,
  h("label", { for: "join-via" }, "Through broker"), via,
  h("div", { class: "actions" }, h("button", { type: "submit", id: "join-button" }, "Join")),
  joined);

  fill(main, h("h1", {}, "Invitations"), h("div", { class: "columns" }, invite, join));
}
