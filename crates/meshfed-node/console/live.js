// Live plots: messages per second and latency percentiles, for all federations together and
// for each one, from `GET /v1/stats` every second (the node's own counters and histograms).

import { poll, seg, stats } from "./api.js";
import { badge, fill, h, say } from "./dom.js";
import { Plot } from "./plot.js";

export function live(main) {
  const note = h("div", { id: "live-note" });
  const totals = new Plot("All federations: messages/s", ["sent", "delivered", "refused"], "msg/s");
  totals.el.id = "plot-total-rate";
  const grid = h("div", { class: "plots", id: "federation-plots" });
  const at = h("p", { class: "muted", id: "stats-at" });
  fill(main, h("h1", {}, "Live"), note, at, h("section", { class: "card" }, totals.el), grid);
  const perFederation = new Map();
  return poll(1000, async () => {
    const s = await stats();
    if (s === null) {
      say(note, "info", "Live statistics not available on this node (GET /v1/stats answered 404).");
      main.dataset.stats = "absent";
      return;
    }
    main.dataset.stats = "present";
    fill(note);
    fill(at, `At ${s.at}, over the last ${s.window_seconds} s`);
    totals.push([s.totals.sent_per_second, s.totals.delivered_per_second, s.totals.refused_per_second]);
    for (const f of s.federations) {
      let p = perFederation.get(f.federation);
      if (!p) {
        p = {
          rate: new Plot("messages/s", ["sent", "delivered", "refused"], "msg/s"),
          latency: new Plot("latency", ["p50", "p90", "p99"], "ms"),
          status: h("span"),
        };
        p.rate.el.dataset.plot = "rate";
        p.latency.el.dataset.plot = "latency";
        grid.append(h("section", { class: "card", "data-federation": f.federation },
          h("h2", {}, h("a", { href: `#/federation/${seg(f.federation)}` }, f.peer), " ", p.status),
          p.rate.el, p.latency.el));
        perFederation.set(f.federation, p);
      }
      fill(p.status, badge(f.state), " ", badge(f.healthy ? "healthy" : "unreachable"));
      p.rate.push([f.sent_per_second, f.delivered_per_second, f.refused_per_second]);
      const l = f.latency_ms;
      p.latency.push(l ? [l.p50, l.p90, l.p99] : [null, null, null]);
    }
  }, (e) => say(note, "error", `Could not read statistics: ${e.message}`));
}
