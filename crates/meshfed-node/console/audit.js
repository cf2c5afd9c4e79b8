// Audit: verify the trail, the report per federation, and the records page by page.

import { get } from "./api.js";
import { badge, fill, h, say, show, table } from "./dom.js";

export function audit(main) {
  const verification = h("div", { id: "audit-verification" });
  const report = h("div", { id: "audit-report" });
  const records = h("div", { id: "audit-records" });
  const log = h("input", { id: "audit-log", placeholder: "node or fed_…", spellcheck: "false" });
  const kind = h("input", { id: "audit-kind", placeholder: "handshake, lifecycle, refused…", spellcheck: "false" });
  const peer = h("input", { id: "audit-peer", placeholder: "peer mesh", spellcheck: "false" });
  let after = null;

  fill(main, h("h1", {}, "Audit"),
    h("section", { class: "card" }, h("h2", {}, "Verification"),
      h("div", { class: "actions" }, h("button", { type: "button", id: "audit-verify", onclick: verify }, "Verify the trail")),
      verification),
    h("section", { class: "card" }, h("h2", {}, "Report"), report),
    h("form", { class: "card", id: "audit-filter", onsubmit: (e) => { e.preventDefault(); after = null; page(true); } },
      h("h2", {}, "Records"),
      h("div", { class: "filters" },
        h("label", {}, "Log ", log), h("label", {}, "Kind ", kind), h("label", {}, "Peer ", peer),
        h("button", { type: "submit" }, "Show")),
      records));

  async function verify() {
    say(verification, "info", "Verifying…");
    try {
      const v = await get("/audit/verify");
      fill(verification, h("p", {}, "The trail is ", badge(v.intact ? "intact" : "broken")),
        table(["Log", "Records", "Pruned", "Heads", "Countersignatures", "Problems", "Discrepancies"],
          v.logs.map((l) => [l.log, String(l.records), String(l.pruned), String(l.heads), String(l.countersignatures), show(l.problems), show(l.discrepancies)])));
    } catch (e) {
      say(verification, "error", e.message);
    }
  }

  async function loadReport() {
    try {
      const r = await get("/audit/report");
      fill(report, r.federations.length === 0 ? h("p", { class: "muted" }, "No federation in the trail yet.")
        : table(["Federation", "Peer", "Sent", "Received", "Refused", "Agreements"],
          r.federations.map((f) => [h("span", { class: "mono" }, f.federation), f.peer ?? "—", String(f.sent), String(f.received), show(f.refused), String(f.agreements.length)])));
    } catch (e) {
      say(report, "error", e.message);
    }
  }

  async function page(fresh) {
    const q = new URLSearchParams({ limit: "100" });
    if (log.value.trim()) q.set("log", log.value.trim());
    if (kind.value.trim()) q.set("kind", kind.value.trim());
    if (peer.value.trim()) q.set("peer", peer.value.trim());
    if (after !== null) q.set("after", String(after));
    try {
      const p = await get(`/audit?${q}`);
      const rows = p.records.map((r) => [String(r.seq), r.log, r.time, r.kind, r.peer ?? "—",
        h("details", {}, h("summary", {}, "record"), h("pre", {}, JSON.stringify(r.record, null, 2)))]);
      const more = p.next === null || p.next === undefined ? null
        : h("button", { type: "button", id: "audit-next", onclick: () => { after = p.next; page(true); } }, "Next page");
      if (fresh) fill(records, rows.length === 0 ? h("p", { class: "muted" }, "No records.") : table(["Seq", "Log", "Time", "Kind", "Peer", ""], rows, { id: "audit-table" }), more);
    } catch (e) {
      say(records, "error", e.message);
    }
  }

  loadReport();
  page(true);
}
