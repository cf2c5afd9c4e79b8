// The topology: this mesh in the middle, each partner mesh around it, linked directly or
// through the broker it is relayed by, and the routes the node knows; each coloured by health.

import { get, poll } from "./api.js";
import { fill, h, say, svg, tone } from "./dom.js";

export function topology(main) {
  const drawing = h("div", { class: "card topology", id: "topology" });
  const legend = h("p", { class: "muted" },
    "Lines: federation links (solid), relayed through a broker (dashed), routes (dotted). Colour: health.");
  const error = h("div");
  fill(main, h("h1", {}, "Topology"), legend, error, drawing);
  return poll(2000, async () => {
    const [node, list, routes] = await Promise.all([get("/node"), get("/federations"), get("/routes")]);
    fill(error);
    fill(drawing, graph(node, list.federations.filter((f) => !f.status.startsWith("terminated")), routes.routes));
  }, (e) => say(error, "error", e.message));
}

function graph(node, federations, routes) {
  const size = 640;
  const centre = size / 2;
  const meshes = new Map();
  const add = (id, kind) => {
    if (!meshes.has(id)) meshes.set(id, { id, kind, health: "unknown" });
    return meshes.get(id);
  };
  const edges = [];
  for (const f of federations) {
    const peer = add(f.peer, "peer");
    peer.health = f.status;
    if (f.via) {
      add(f.via, "broker");
      edges.push({ from: node.mesh, to: f.via, style: "link", health: "unknown" });
      edges.push({ from: f.via, to: f.peer, style: "relayed", health: f.status });
    } else {
      edges.push({ from: node.mesh, to: f.peer, style: "link", health: f.status });
    }
  }
  for (const r of routes) {
    add(r.destination, "routed");
    const path = r.path.length > 1 ? r.path : [node.mesh, r.destination];
    for (let i = 0; i + 1 < path.length; i++) {
      add(path[i], "routed");
      add(path[i + 1], "routed");
      edges.push({ from: path[i], to: path[i + 1], style: "route", health: "healthy" });
    }
  }
  meshes.delete(node.mesh);
  for (const e of edges) {
    if (e.from !== node.mesh) { const m = meshes.get(e.from); if (m && m.kind === "routed") m.kind = "broker"; }
  }
  const others = [...meshes.values()];
  const place = new Map([[node.mesh, { x: centre, y: centre }]]);
  const radius = centre - 70;
  others.forEach((m, i) => {
    const a = (2 * Math.PI * i) / Math.max(others.length, 1) - Math.PI / 2;
    const r = m.kind === "broker" ? radius * 0.55 : radius;
    place.set(m.id, { x: centre + r * Math.cos(a), y: centre + r * Math.sin(a) });
  });
  const lines = edges.filter((e) => place.has(e.from) && place.has(e.to)).map((e) => {
    const a = place.get(e.from);
    const b = place.get(e.to);
    return svg("line", {
      x1: a.x, y1: a.y, x2: b.x, y2: b.y,
      class: `edge ${e.style} ${tone(e.health)}`,
      "data-from": e.from, "data-to": e.to,
    });
  });
  const small = others.length > 24;
  const nodes = [{ id: node.mesh, kind: "self", health: "active" }, ...others].map((m) => {
    const p = place.get(m.id);
    return svg("g", { class: `mesh ${m.kind} ${tone(m.health)}`, "data-mesh": m.id },
      svg("circle", { cx: p.x, cy: p.y, r: m.kind === "self" ? 26 : small ? 8 : 18 }),
      svg("text", { x: p.x, y: p.y + (m.kind === "self" ? 42 : small ? 20 : 32), "text-anchor": "middle" }, m.id),
      svg("title", {}, `${m.id} (${m.kind === "self" ? "this mesh" : m.kind}): ${m.health}`));
  });
  return svg("svg", { viewBox: `0 0 ${size} ${size}`, role: "img", "aria-label": "Topology of meshes, brokers and links" }, lines, nodes);
}
