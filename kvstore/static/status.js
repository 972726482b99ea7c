// ringlock status page: asks status/v1 every 2 s and redraws (docs/status.md).
// Every text that came from the node goes into the DOM through textContent, never as HTML.
"use strict";

const REFRESH_MS = 2000;      // one fetch every 2 s, counted from the end of the previous one
const FETCH_TIMEOUT_MS = 5000; // a fetch that takes longer counts as failed
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2",
                 "#eeca3b", "#9d755d", "#ff9da6", "#bab0ac", "#2f4b7c", "#a05195"];

let lastOk = null;   // Date of the last good answer

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else node[k] = v;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function badge(health) {
  return el("span", {class: "badge " + health, "data-health": health}, health);
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], {hour12: false});
}

function colours(ring) {
  const out = new Map();
  ring.members.forEach((name, i) => out.set(name, PALETTE[i % PALETTE.length]));
  return out;
}

function point(cx, cy, r, angle) {
  return [cx + r * Math.cos(angle), cy + r * Math.sin(angle)];
}

function arcPath(i, n, cx, cy, outer, inner) {
  const a0 = (2 * Math.PI * i) / n - Math.PI / 2;
  let a1 = (2 * Math.PI * (i + 1)) / n - Math.PI / 2;
  if (n === 1) a1 -= 1e-4;  // a whole circle is not one arc
  const large = a1 - a0 > Math.PI ? 1 : 0;
  const [x0, y0] = point(cx, cy, outer, a0), [x1, y1] = point(cx, cy, outer, a1);
  const [x2, y2] = point(cx, cy, inner, a1), [x3, y3] = point(cx, cy, inner, a0);
  const f = (v) => v.toFixed(3);
  return `M${f(x0)} ${f(y0)} A${outer} ${outer} 0 ${large} 1 ${f(x1)} ${f(y1)} ` +
         `L${f(x2)} ${f(y2)} A${inner} ${inner} 0 ${large} 0 ${f(x3)} ${f(y3)} Z`;
}

function drawRing(doc, colour, healthOf) {
  const ring = doc.ring, n = ring.owners.length;
  const root = svg("svg", {viewBox: "0 0 240 240", role: "img",
                           "data-ring-version": ring.version, "data-partitions": n});
  const title = svg("title");
  title.textContent = `ring v${ring.version}: ${n} partitions over ${ring.members.length} nodes`;
  root.append(title);
  const gap = Math.min(0.6, 40 / n);  // the white line between arcs, thinner on big rings
  ring.owners.forEach((owner, i) => {
    const health = healthOf.get(owner) || "unknown";
    const arc = svg("path", {d: arcPath(i, n, 120, 120, 110, 70), class: "arc " + health,
                             fill: colour.get(owner) || "#8a94a6", "stroke-width": gap,
                             "data-partition": i, "data-owner": owner});
    const tip = svg("title");
    tip.textContent = `partition ${i}: ${owner} (${health})`;
    arc.append(tip);
    root.append(arc);
  });
  const centre = svg("text", {x: 120, y: 116, class: "centre"});
  centre.textContent = `ring v${ring.version}`;
  const sub = svg("text", {x: 120, y: 132, class: "centre sub"});
  sub.textContent = `${n} partitions, ${ring.members.length} nodes`;
  root.append(centre, sub);
  document.getElementById("ring").replaceChildren(root);
}

function drawLegend(doc, colour, voterIds, leaderId) {
  const items = doc.members.map((m) => {
    const swatch = el("span", {class: "swatch"});
    swatch.style.background = colour.get(m.name) || "#d0d4db";
    const li = el("li", {"data-node": m.name, "data-health": m.health},
                  swatch, el("span", {class: "name"}, m.name), badge(m.health),
                  el("span", {class: "muted"}, m.member ? `${m.partitions} partitions`
                                                        : `not in the ring (${m.status})`));
    if (m.self) li.append(el("span", {class: "muted"}, "(this node)"));
    if (m.status !== "up" && m.member) li.append(el("span", {class: "muted"}, m.status));
    const id = voterIds.get(m.name);
    if (id !== undefined) {
      li.append(el("span", {class: "muted"}, id === leaderId ? `lock leader #${id}`
                                                             : `lock voter #${id}`));
    }
    return li;
  });
  document.getElementById("legend").replaceChildren(...items);
}

function emptyRow(columns, text) {
  return el("tr", {}, el("td", {class: "empty", colSpan: columns}, text));
}

function drawLock(lock) {
  document.getElementById("lock-note").textContent = lock.note || "";
  const leader = document.getElementById("lock-leader");
  leader.textContent = lock.leader ? `#${lock.leader.id} ${lock.leader.address || "?"}`
                                   : (lock.configured ? "unknown" : "none");
  leader.dataset.leader = lock.leader ? lock.leader.id : "";
  const raft = lock.raft;
  document.getElementById("lock-raft").textContent = lock.leader
    ? `term ${lock.leader.term}` + (raft ? `; this member: ${raft.role}, commit ${raft.commit},` +
                                           ` applied ${raft.applied}` : "")
    : "";
  document.getElementById("voters").replaceChildren(...lock.voters.map((v) => {
    const li = el("li", {"data-voter": v.id, "data-health": v.health},
                  el("span", {}, `#${v.id}`), el("span", {class: "name"}, v.address),
                  badge(v.health));
    if (v.leader) li.append(el("strong", {}, "leader"));
    if (v.id === lock.member_id) li.append(el("span", {class: "muted"}, "(this node)"));
    return li;
  }));
  const sessions = document.querySelector("#sessions tbody");
  const locks = document.querySelector("#locks tbody");
  const totals = (id, shown, total) => {
    document.getElementById(id).textContent =
      total === undefined ? "" : (shown < total ? `(${shown} of ${total})` : `(${total})`);
  };
  if (!lock.member) {
    const why = lock.configured ? "not a lock member" : "no lock service configured";
    sessions.replaceChildren(emptyRow(5, why));
    locks.replaceChildren(emptyRow(5, why));
    totals("sessions-total"); totals("locks-total");
    return;
  }
  totals("sessions-total", lock.sessions.length, lock.sessions_total);
  totals("locks-total", lock.locks.length, lock.locks_total);
  sessions.replaceChildren(...(lock.sessions.length ? lock.sessions.map((s) =>
    el("tr", {"data-session": s.id}, el("td", {}, s.id), el("td", {}, `${s.ttl_ms} ms`),
       el("td", {}, `${s.expires_in_ms} ms`), el("td", {class: "name"}, s.held.join(", ")),
       el("td", {class: "name"}, s.waiting.join(", ")))) : [emptyRow(5, "no sessions")]));
  locks.replaceChildren(...(lock.locks.length ? lock.locks.map((l) =>
    el("tr", {"data-lock": l.name}, el("td", {class: "name"}, l.name),
       el("td", {}, l.mode || "free"),
       el("td", {}, l.holders.map((h) => `${h.session}:${h.generation}`).join(", ")),
       el("td", {}, l.waiters), el("td", {}, l.delay_ms ? `${l.delay_ms} ms` : ""))) :
    [emptyRow(5, "no locks")]));
}

function drawEvents(events) {
  const items = events.items.map((e) =>
    el("li", {class: e.level, "data-seq": e.seq, "data-kind": e.kind},
       el("span", {class: "muted"}, clock(e.time)), el("span", {class: "kind"}, e.kind),
       el("span", {class: "text"}, e.text)));
  if (!items.length) items.push(el("li", {class: "muted"}, "no events yet"));
  if (events.dropped) {
    items.push(el("li", {class: "muted"}, `${events.dropped} older events not kept`));
  }
  document.getElementById("events").replaceChildren(...items);
}

function render(doc) {
  document.getElementById("node").textContent = doc.node;
  document.title = `ringlock ${doc.node}`;
  const colour = colours(doc.ring);
  const healthOf = new Map(doc.members.map((m) => [m.name, m.health]));
  const voterIds = new Map(doc.lock.voters.map((v) => [v.address, v.id]));
  drawRing(doc, colour, healthOf);
  drawLegend(doc, colour, voterIds, doc.lock.leader ? doc.lock.leader.id : null);
  drawLock(doc.lock);
  drawEvents(doc.events);
}

function showFreshness(error) {
  const line = document.getElementById("freshness");
  if (error === null) {
    document.body.dataset.state = "live";
    line.textContent = `live: updated ${lastOk.toLocaleTimeString([], {hour12: false})}`;
    return;
  }
  document.body.dataset.state = "stale";
  const since = lastOk
    ? `last update ${lastOk.toLocaleTimeString([], {hour12: false})}, ` +
      `${Math.round((Date.now() - lastOk) / 1000)} s ago`
    : "no update yet";
  line.textContent = `stale: ${since}; the node did not answer (${error})`;
}

async function refresh() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const resp = await fetch("status/v1", {cache: "no-store", signal: abort.signal,
                                           headers: {Accept: "application/json"}});
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const doc = await resp.json();
    if (doc.version !== 1) throw new Error(`unknown document version ${doc.version}`);
    lastOk = new Date();
    render(doc);
    showFreshness(null);
  } catch (err) {
    showFreshness(err.name === "AbortError" ? "timed out" : err.message);
  } finally {
    clearTimeout(timer);
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
