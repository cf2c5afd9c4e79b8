// The overview: this node, and every federation with its status, health, round trip, backlog
// and rates. The table is updated in place every second (rows keyed by federation id), so a
// row an operator is about to click stays where it is.

import { get, poll, seg, stats } from "./api.js";
import { badge, bytes, fill, h, num, say } from "./dom.js";

const COLUMNS = ["Federation", "Peer mesh", "Status", "Health", "RTT ms", "Backlog", "Sent/s", "Delivered/s", "Refused/s", "Agreement"];

export function overview(main) {
  const node = h("section", { class: "card", id: "node" }, h("p", { class: "muted" }, "Loading…"));
  const totals = h("section", { class: "totals", id: "totals" });
  const statsNote = h("div", { id: "stats-note" });
  const error = h("div", { id: "overview-error" });
  const body = h("tbody", { id: "federation-rows" });
  const empty = h("p", { class: "muted", id: "no-federations", hidden: true },
    "No federations yet: invite a mesh or join one on the Invitations page.");
  fill(main,
    h("h1", {}, "Overview"),
    node,
    totals,
    statsNote,
    error,
    h("section", { class: "card" },
      h("h2", {}, "Federations"),
      h("div", { class: "scroll" },
        h("table", { id: "federations" },
          h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
          body)),
      empty));

  const rows = new Map();
  let first = true;
  get("/node").then((n) => fill(node,
    h("h2", {}, `Mesh ${n.mesh}`),
    h("p", {}, `${n.role} ${n.node} · ${n.uri} · federation address ${n.federation_address} · meshfed ${n.version}`),
    h("p", { class: "muted" }, `CA ${n.ca_fingerprint.slice(0, 32)}… · certificate until ${n.node_cert_expires}`),
  )).catch((e) => say(node, "error", e.message));

  return poll(1000, async () => {
    // The federations are shown whatever the statistics do.
    const [list, live] = await Promise.all([get("/federations"), stats().catch((e) => e)]);
    fill(error);
    if (live === null) {
      say(statsNote, "info", "Live statistics not available on this node: rates are not shown.");
    } else if (live instanceof Error) {
      say(statsNote, "error", `Could not read live statistics: ${live.message}`);
    } else {
      fill(statsNote);
    }
    const current = live instanceof Error ? null : live;
    const rates = new Map((current?.federations ?? []).map((f) => [f.federation, f]));
    const seen = new Set();
    for (const f of list.federations) {
      seen.add(f.id);
      let row = rows.get(f.id);
      if (!row) {
        row = newRow(f);
        rows.set(f.id, row);
        body.append(row.tr);
      }
      update(row, f, rates.get(f.id));
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    empty.hidden = rows.size > 0;
    showTotals(totals, list.federations, current);
    if (first) {
      first = false;
      // The time from navigation to the federations shown (read by the browser test).
      performance.mark("overview-rendered");
      main.dataset.rendered = String(Math.round(performance.now()));
    }
  }, (e) => say(error, "error", `Could not load federations: ${e.message}`));
}

function newRow(f) {
  const cells = COLUMNS.map(() => h("td"));
  fill(cells[0], h("a", { href: `#/federation/${seg(f.id)}`, class: "mono" }, f.id));
  return { tr: h("tr", { "data-federation": f.id, "data-peer": f.peer }, cells), cells };
}

function update(row, f, s) {
  const c = row.cells;
  row.tr.dataset.status = f.status;
  setText(c[1], f.peer + (f.via ? ` (via ${f.via})` : ""));
  if (c[2].dataset.value !== f.status) {
    c[2].dataset.value = f.status;
    fill(c[2], badge(f.status));
  }
  if (c[3].dataset.value !== f.health) {
    c[3].dataset.value = f.health;
    fill(c[3], badge(f.health));
  }
  setText(c[4], num(s?.rtt_ms ?? f.rtt_ms, 2));
  const backlog = s?.backlog ?? f.backlog;
  setText(c[5], backlog ? `${backlog.messages} (${bytes(backlog.bytes)})` : "—");
  setText(c[6], num(s?.sent_per_second));
  setText(c[7], num(s?.delivered_per_second));
  setText(c[8], num(s?.refused_per_second));
  setText(c[9], f.agreement ? `v${f.agreement.version}` : "—");
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function showTotals(el, federations, live) {
  const count = (pred) => federations.filter(pred).length;
  const tiles = [
    ["Federations", federations.length],
    ["Active", count((f) => f.status === "active")],
    ["Needs attention", count((f) => ["degraded", "unreachable", "suspended"].includes(f.status))],
    ["Backlog", federations.reduce((n, f) => n + (f.backlog?.messages ?? 0), 0)],
  ];
  if (live) {
    tiles.push(["Sent/s", num(live.totals.sent_per_second)]);
    tiles.push(["Delivered/s", num(live.totals.delivered_per_second)]);
    tiles.push(["Refused/s", num(live.totals.refused_per_second)]);
  }
  fill(el, tiles.map(([k, v]) => h("div", { class: "tile" }, h("span", { class: "tile-value" }, String(v)), h("span", { class: "tile-label" }, k))));
}
