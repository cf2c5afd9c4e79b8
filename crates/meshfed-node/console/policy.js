// Policy: the file in force, what it offers at handshakes, each federation's agreed terms; and
// replacing the file (checked by the node, then proposed to every live partner).

import { call, get, seg } from "./api.js";
import { badge, confirmDialog, fill, h, say, show, table } from "./dom.js";

export function policy(main) {
  const error = h("div");
  const offer = h("section", { class: "card", id: "policy-offer" });
  const agreements = h("section", { class: "card", id: "policy-agreements" });
  const editor = h("textarea", { id: "policy-file", rows: 16, spellcheck: "false", placeholder: "policy.toml" });
  const result = h("div", { id: "policy-result" });
  const edit = h("section", { class: "card" }, h("h2", {}, "Policy file"),
    h("p", { class: "muted" }, "Replacing it is checked by the node first; a changed policy is proposed to every live partner."),
    editor,
    h("div", { class: "actions" }, h("button", { type: "button", id: "policy-replace", class: "danger", onclick: replace }, "Replace policy")),
    result);
  fill(main, h("h1", {}, "Policy"), error, edit, offer, agreements);

  async function load() {
    try {
      const p = await get("/policy");
      editor.value = p.file ?? "";
      fill(offer, h("h2", {}, "What this mesh offers"), show(p.offer));
      fill(agreements, h("h2", {}, "Agreements in force"), table(
        ["Federation", "Peer", "State", "Version", "Terms"],
        p.agreements.map((a) => [
          h("a", { href: `#/federation/${seg(a.federation_id)}`, class: "mono" }, a.federation_id),
          a.peer, badge(a.state), a.agreement ? `v${a.agreement.version}` : "—",
          a.agreement ? show(a.agreement.policy) : "—",
        ])));
    } catch (e) {
      say(error, "error", `Could not read the policy: ${e.message}`);
    }
  }

  async function replace() {
    const ok = await confirmDialog("Replace the policy?", "The new file takes effect for handshakes to come and is proposed to every live partner now.", "Replace");
    if (ok === null) return;
    try {
      const r = await call("PUT", "/policy", { toml: editor.value });
      fill(result, h("p", { class: "note ok" }, "The policy is in force."),
        r.proposals.length === 0 ? h("p", { class: "muted" }, "No partner was asked (nothing changed for them).")
          : table(["Federation", "Peer", "Agreed", "Version", "Reason"], r.proposals.map((x) => [x.federation_id, x.peer, x.agreed ? "yes" : "no", x.version ?? "—", x.reason ?? "—"])));
      load();
    } catch (e) {
      say(result, "error", e.message);
    }
  }

  load();
}
