// One federation: its agreement (capabilities, policy terms, version history), its link
// session, backlog by priority, dead letters, and the lifecycle actions, each confirmed first.

import { ApiError, get, poll, post, seg } from "./api.js";
import { badge, bytes, confirmDialog, facts, fill, h, num, say, show, table } from "./dom.js";

const ACTIONS = [
  { op: "suspend", text: "Suspend", question: "Message flow pauses both ways until either side resumes." },
  { op: "resume", text: "Resume", question: "Message flow resumes both ways." },
  { op: "renegotiate", text: "Renegotiate", question: "Proposes the next agreement version with this side's current offer; the old version stays in the history." },
  { op: "terminate", text: "Terminate", question: "Ends the federation for good: what is in flight is delivered first (at most 10 s) and the rest dead-lettered.", extras: [{ name: "force", text: "Force: at once, dead-lettering everything queued" }] },
];

export function federation(main, [id]) {
  if (!id) {
    location.hash = "#/overview";
    return () => {};
  }
  const title = h("h1", {}, "Federation ", h("span", { class: "mono" }, id));
  const status = h("div", { id: "federation-status" });
  const result = h("div", { id: "action-result" });
  const buttons = ACTIONS.map((a) => h("button", {
    type: "button", id: `action-${a.op}`, class: a.op === "terminate" ? "danger" : "",
    onclick: () => act(a),
  }, a.text));
  const summary = h("section", { class: "card", id: "summary" });
  const agreement = h("section", { class: "card", id: "agreement" });
  const session = h("section", { class: "card", id: "session" });
  const backlog = h("section", { class: "card", id: "backlog" });
  const letters = h("section", { class: "card", id: "dead-letters" });
  fill(main, title, status,
    h("section", { class: "card actions-bar" }, h("h2", {}, "Lifecycle"), h("div", { class: "actions" }, buttons), result),
    h("div", { class: "columns" }, summary, session), backlog, agreement, letters);

  let current = null;
  async function act(a) {
    const peer = current ? current.peer : "the peer";
    const answer = await confirmDialog(`${a.text} the federation with ${peer}?`, a.question, a.text, a.extras ?? []);
    if (answer === null) return;
    for (const b of buttons) b.disabled = true;
    say(result, "info", `${a.text}…`);
    try {
      const body = answer.force ? { force: true } : undefined;
      const f = await post(`/federations/${seg(id)}/${a.op}`, body);
      say(result, "ok", `${a.text}: the federation is now ${f.status}.`);
      await refresh();
    } catch (e) {
      say(result, "error", `${a.text} failed: ${e.message}`);
    } finally {
      enable();
    }
  }

  function enable() {
    const s = current?.state ?? "";
    const terminated = s.startsWith("terminated");
    for (const [i, a] of ACTIONS.entries()) {
      buttons[i].disabled = terminated
        || (a.op === "suspend" && s === "suspended")
        || (a.op === "resume" && s !== "suspended")
        || (a.op === "renegotiate" && s !== "active");
    }
  }

  async function refresh() {
    let f;
    try {
      f = await get(`/federations/${seg(id)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        say(status, "error", `No federation ${id} on this node.`);
        return;
      }
      throw e;
    }
    const dead = await get("/messages/dead-letters");
    current = f;
    main.dataset.status = f.status;
    fill(status, h("p", {}, "With mesh ", h("strong", { id: "peer" }, f.peer), " · ", badge(f.status), " ", badge(f.health),
      f.state_reason ? h("span", { class: "muted" }, ` · ${f.state_reason}`) : null));
    enable();
    fill(summary, h("h2", {}, "Federation"), facts([
      ["Peer node", f.peer_node],
      ["Role", f.role],
      ["State", f.state],
      ["Reason", f.state_reason],
      ["Peer addresses", f.peer_addresses],
      ["Via broker", f.via],
      ["Peer CAs", f.peer_cas.map((c) => `${c.slice(0, 24)}…`)],
      ["Created", f.created],
      ["Updated", f.updated],
      ["Circuit breaker", f.breaker ? `${f.breaker.state}${f.breaker.reason ? ` (${f.breaker.reason})` : ""}` : null],
    ]));
    fill(session, h("h2", {}, "Link session"), facts([
      ["Health", badge(f.health)],
      ["Connected since", f.connected_since],
      ["Last heartbeat", f.last_heartbeat],
      ["RTT ms", num(f.rtt_ms, 2)],
      ["Sent", f.delivery?.sent],
      ["Acknowledged", f.delivery?.acknowledged],
      ["Retransmitted", f.delivery?.retransmitted],
      ["Not wanted by the peer", f.delivery?.unwanted],
      ["Peer interest", f.peer_interest],
    ]));
    if (f.backlog) {
      const b = f.backlog;
      fill(backlog, h("h2", {}, "Backlog"),
        h("p", {}, `${b.messages} messages (${bytes(b.bytes)}) · ${b.in_flight} in flight · ${b.awaiting_persistence} awaiting persistence · oldest ${b.oldest_ms === null ? "—" : `${b.oldest_ms} ms`}`),
        table(["Priority", ...b.by_priority.map((_, p) => String(p))], [["Messages", ...b.by_priority.map(String)]], { id: "backlog-by-priority" }));
    } else {
      fill(backlog, h("h2", {}, "Backlog"), h("p", { class: "muted" }, "No stream runs for this federation now."));
    }
    const a = f.agreement;
    fill(agreement, h("h2", {}, "Agreement"), a ? [
      facts([
        ["Version", a.version],
        ["Digest", h("span", { class: "mono" }, `${a.digest.slice(0, 32)}…`)],
        ["Valid", `${a.valid_from} to ${a.valid_until}`],
      ]),
      h("h3", {}, "Capabilities"),
      facts([
        ["Protocol version", a.protocol_version],
        ["Security suite", a.security_suite],
        ["Highest QoS", a.max_qos],
        ["Largest frame", bytes(a.max_frame)],
        ["Compression", a.compression],
        ["Compliance", a.compliance],
        [`Topics ${f.role === "initiator" ? "this mesh" : "the peer"} may send`, a.topics_to_responder],
        [`Topics ${f.role === "initiator" ? "the peer" : "this mesh"} may send`, a.topics_to_initiator],
      ]),
      h("h3", {}, "Policy terms"),
      show(a.policy),
    ] : h("p", { class: "muted" }, "The stored agreement cannot be read."),
    h("h3", {}, "Version history"),
    (f.agreement_history ?? []).length === 0
      ? h("p", { class: "muted", id: "no-history" }, "No earlier version.")
      : table(["Version", "Digest", "Replaced"], f.agreement_history.map((p) => [String(p.version), h("span", { class: "mono" }, `${p.digest.slice(0, 32)}…`), p.replaced]), { id: "history" }));
    const mine = dead.dead_letters.filter((d) => d.to === f.peer);
    fill(letters, h("h2", {}, `Dead letters (${f.dead_lettered ?? mine.length})`),
      mine.length === 0 ? h("p", { class: "muted" }, "None.")
        : table(["Envelope", "Topic", "Priority", "QoS", "Reason", "At"],
          mine.slice(0, 200).map((d) => [h("span", { class: "mono" }, d.id), d.topic, String(d.priority), String(d.qos), d.reason, d.at])));
  }

  return poll(2000, refresh, (e) => say(status, "error", `Could not load the federation: ${e.message}`));
}
