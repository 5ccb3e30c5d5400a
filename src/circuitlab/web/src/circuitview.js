// The circuit view: a graph file's automatic supernodes (circuit_suggestions, docs/circuits.md)
// drawn as the reduced circuit (groups, tokens, logits; a link is the sum of its members' links
// in the file), with the hierarchy behind it: a slider cuts it at any number of groups, a group
// splits into its two sub-groups in place and collapses back, groups can be picked and merged,
// renamed, and accepted. Suggestions are the page's own until accepted: an accepted group becomes
// a supernode like a hand-made one (state.supernodes, members pinned), so it is saved with the
// annotations and kept in the URL; the view marks the groups that match a saved supernode.
import { format } from "d3-format";
import { select } from "d3-selection";
import { KIND, tokenText } from "./data.js";
import { el } from "./dom.js";
import { Hierarchy } from "./hierarchy.js";
import { emit, on, setSupernodeLabel, state, ungroup } from "./state.js";

const num = format(".3~g");
const BOX_H = 30;
const PAD = 8;

// The view's own state: the hierarchy, the groups shown (each one or more clusters), the
// cluster each split group came from (to collapse back), picked groups, unaccepted renames.
export const cv = {
  h: null,
  error: "",
  shown: false,
  k: 1,
  groups: [], // [{ clusters: [c, ...] }]
  origin: new Map(), // cluster -> the cluster it was split from
  picked: new Set(), // group keys
  renames: new Map(), // group key -> label (not yet accepted)
  selected: "", // group key
};

let $ = null; // the view's elements

export function setupCircuitView() {
  const wrap = document.getElementById("graph-wrap");
  const toggle = document.getElementById("circuit-toggle");
  const root = document.getElementById("circuit");
  $ = { wrap, toggle, root, svg: root.querySelector("#circuit-draw"), list: root.querySelector("#circuit-list") };
  toggle.addEventListener("click", () => show(!cv.shown));
  new ResizeObserver(() => { if (cv.shown) draw(); }).observe(root);
  on((what) => {
    if (what === "graph") load();
    else if (cv.h && ["pins", "labels", "select", "prune"].includes(what)) render();
  });
}

// Show the circuit (true) or the full graph (false).
export function show(visible) {
  cv.shown = Boolean(visible && cv.h);
  $.root.hidden = !cv.shown;
  $.toggle.textContent = cv.shown ? "full graph" : "circuit view";
  $.toggle.classList.toggle("on", cv.shown);
  if (cv.shown) render();
}

// A graph opened: its suggestions (if any) at their default cut, the circuit shown first.
function load() {
  const raw = state.graph && state.graph.suggestions;
  cv.h = null;
  cv.error = "";
  cv.picked.clear();
  cv.renames.clear();
  cv.origin.clear();
  cv.selected = "";
  if (raw) {
    try {
      cv.h = new Hierarchy(raw, state.graph);
    } catch (e) {
      cv.error = String(e.message || e);
    }
  }
  $.toggle.hidden = !cv.h;
  $.toggle.title = cv.error || "the reduced circuit of automatic supernodes, and the full graph";
  if (cv.error) console.warn(cv.error);
  if (cv.h) setCut(cv.h.defaultGroups);
  show(Boolean(cv.h));
}

// ---- the groups ---------------------------------------------------------------------------
export function setCut(k) {
  cv.k = Math.max(1, Math.min(cv.h.maxGroups, Math.round(k)));
  cv.groups = cv.h.cut(cv.k).map((c) => ({ clusters: [c] }));
  cv.origin.clear();
  cv.picked.clear();
  render();
}

const keyOf = (g) => g.clusters.map((c) => `c${c}`).join("+");

function membersOf(g) {
  const out = new Set();
  for (const c of g.clusters) for (const id of cv.h.members(c)) out.add(id);
  return [...out];
}

const memberKey = (ids) => [...ids].sort().join("|");

// The saved supernode with exactly these members, as its index (or -1).
function acceptedIndex(ids) {
  const key = memberKey(ids);
  return state.supernodes.findIndex((s) => memberKey(s.slice(1)) === key);
}

function labelOf(g) {
  const i = acceptedIndex(membersOf(g));
  if (i >= 0) return state.supernodes[i][0];
  const renamed = cv.renames.get(keyOf(g));
  if (renamed != null) return renamed;
  if (g.clusters.length === 1) return cv.h.label(g.clusters[0]);
  return `auto: ${g.clusters.map((c) => cv.h.label(c).replace(/^auto: /, "")).join(" + ")}`;
}

// Split a group of one cluster into its two sub-groups, in place.
export function split(key) {
  const i = cv.groups.findIndex((g) => keyOf(g) === key);
  const g = cv.groups[i];
  const kids = g && g.clusters.length === 1 && cv.h.children(g.clusters[0]);
  if (!kids) return;
  kids.forEach((c) => cv.origin.set(c, g.clusters[0]));
  cv.groups.splice(i, 1, { clusters: [kids[0]] }, { clusters: [kids[1]] });
  cv.picked.delete(key);
  render();
}

// Collapse a split group (and everything split below the same parent) back into the parent.
export function collapse(key) {
  const g = cv.groups.find((x) => keyOf(x) === key);
  const parent = g && g.clusters.length === 1 ? cv.origin.get(g.clusters[0]) : undefined;
  if (parent === undefined) return;
  const at = cv.groups.findIndex((x) => x.clusters.every((c) => cv.h.isUnder(c, parent)));
  cv.groups = cv.groups.filter((x) => !x.clusters.every((c) => cv.h.isUnder(c, parent)));
  cv.groups.splice(at, 0, { clusters: [parent] });
  for (const c of [...cv.origin.keys()]) if (c !== parent && cv.h.isUnder(c, parent)) cv.origin.delete(c);
  render();
}

// Merge the picked groups into one (at the first one's place).
export function mergePicked() {
  const picked = cv.groups.filter((g) => cv.picked.has(keyOf(g)));
  if (picked.length < 2) return;
  const merged = { clusters: picked.flatMap((g) => g.clusters).sort((a, b) => a - b) };
  const at = cv.groups.indexOf(picked[0]);
  cv.groups = cv.groups.filter((g) => !picked.includes(g));
  cv.groups.splice(at, 0, merged);
  cv.picked.clear();
  render();
}

// Accept a group: it becomes a supernode (replacing saved ones that share a member), members
// pinned, as the subgraph's G-grouping does; the page saves it with the other annotations.
export function accept(key) {
  const g = cv.groups.find((x) => keyOf(x) === key);
  if (!g) return;
  const ids = membersOf(g);
  if (!ids.length) return;
  const label = labelOf(g);
  state.supernodes = state.supernodes.filter((s) => !s.slice(1).some((id) => ids.includes(id)));
  state.supernodes.push([label, ...ids]);
  for (const id of ids) if (!state.pinned.includes(id)) state.pinned.push(id);
  cv.renames.delete(key);
  emit("pins", { dirty: true });
}

export function rename(key, label) {
  const g = cv.groups.find((x) => keyOf(x) === key);
  if (!g) return;
  const i = acceptedIndex(membersOf(g));
  if (i >= 0) return setSupernodeLabel(i, label);
  cv.renames.set(key, label);
  render();
}

// ---- drawing ------------------------------------------------------------------------------
function render() {
  if (!cv.h || !cv.shown || !$) return;
  renderList();
  draw();
}

function rowOf(n, rows) {
  return n.kind === KIND.token ? 0 : n.kind === KIND.logit ? rows - 1 : n.layer + 1;
}

// Units drawn: the groups, the tokens that feed them and the logits; links summed from the file.
function reduced() {
  const g = state.graph;
  const unitOf = new Map();
  const units = cv.groups.map((grp) => {
    const ids = membersOf(grp);
    const u = { key: keyOf(grp), group: grp, ids, kind: "group" };
    ids.forEach((id) => unitOf.set(id, u));
    return u;
  });
  for (const n of g.nodes) {
    if (n.kind !== KIND.token && n.kind !== KIND.logit) continue;
    const u = { key: n.id, ids: [n.id], kind: n.kind };
    unitOf.set(n.id, u);
  }
  const sums = new Map();
  for (const l of g.links) {
    const s = unitOf.get(l.source.id);
    const t = unitOf.get(l.target.id);
    if (!s || !t || s === t) continue;
    const key = `${s.key}→${t.key}`;
    const e = sums.get(key) || { from: s, to: t, weight: 0 };
    e.weight += l.weight;
    sums.set(key, e);
  }
  const links = [...sums.values()];
  const linked = new Set(links.flatMap((l) => [l.from, l.to]));
  return { units: units.concat([...unitOf.values()].filter((u) => u.kind !== "group" && linked.has(u))), links };
}

function place(units, width, height) {
  const g = state.graph;
  const rows = g.nLayers + 2;
  const col = (width - 2 * PAD) / g.nPos;
  const boxW = Math.max(70, Math.min(150, (width - 2 * PAD) / Math.max(4, Math.ceil(units.length / 3))));
  for (const u of units) {
    const ns = u.ids.map((id) => g.byId.get(id));
    const row = ns.reduce((a, n) => a + rowOf(n, rows), 0) / ns.length;
    const pos = ns.reduce((a, n) => a + n.pos, 0) / ns.length;
    u.w = u.kind === "group" ? boxW : Math.max(30, Math.min(80, col - 4));
    u.x0 = PAD + (pos + 0.5) * col - u.w / 2;
    u.y0 = PAD + (1 - (row + 0.5) / rows) * (height - 2 * PAD) - BOX_H / 2;
  }
  // Tokens and logits first (their own columns), then groups, each at the free spot nearest to
  // where its members sit: sideways first, then a band up or down.
  const placed = [];
  const hit = (u) => placed.some((v) => Math.abs(v.y - u.y) < BOX_H + 3 && u.x < v.x + v.w + 4 && v.x < u.x + u.w + 4);
  const clampX = (x, u) => Math.max(PAD / 2, Math.min(width - u.w - PAD / 2, x));
  const clampY = (y) => Math.max(PAD / 2, Math.min(height - BOX_H - PAD / 2, y));
  const order = [...units].sort((a, b) => (a.kind === "group") - (b.kind === "group"));
  for (const u of order) {
    const spots = [];
    for (let band = 0; band < 8; band++) {
      for (const dy of band ? [band, -band] : [0]) {
        for (let j = 0; j * 16 < width; j++) {
          for (const dx of j ? [j * 16, -j * 16] : [0]) spots.push([dx, dy * (BOX_H + 4)]);
        }
      }
    }
    u.x = clampX(u.x0, u);
    u.y = clampY(u.y0);
    for (const [dx, dy] of spots) {
      u.x = clampX(u.x0 + dx, u);
      u.y = clampY(u.y0 + dy);
      if (!hit(u)) break;
    }
    placed.push(u);
  }
}

function draw() {
  const svgEl = $.svg;
  const svg = select(svgEl);
  svg.selectAll("*").remove();
  const width = svgEl.clientWidth || 600;
  const height = svgEl.clientHeight || 400;
  const { units, links } = reduced();
  place(units, width, height);
  const maxAbs = Math.max(1e-12, ...links.map((l) => Math.abs(l.weight)));
  const mid = (u) => [u.x + u.w / 2, u.y + BOX_H / 2];
  const lines = svg.append("g").attr("class", "cv-links").selectAll("line").data(links).join("line")
    .attr("class", (l) => (l.weight >= 0 ? "pos" : "neg"))
    .attr("x1", (l) => mid(l.from)[0]).attr("y1", (l) => mid(l.from)[1])
    .attr("x2", (l) => mid(l.to)[0]).attr("y2", (l) => mid(l.to)[1])
    .attr("stroke-width", (l) => 0.6 + 5 * Math.sqrt(Math.abs(l.weight) / maxAbs));
  lines.append("title").text((l) => `${titleOf(l.from)} → ${titleOf(l.to)}: ${num(l.weight)}`);
  const boxes = svg.append("g").selectAll("g").data(units).join("g")
    .attr("class", (u) => boxClass(u))
    .attr("data-key", (u) => u.key)
    .attr("transform", (u) => `translate(${u.x},${u.y})`);
  boxes.append("rect").attr("width", (u) => u.w).attr("height", BOX_H).attr("rx", 5);
  boxes.append("text").attr("x", 5).attr("y", 12).text((u) => clip(titleOf(u).replace(/^auto: /, ""), Math.floor(u.w / 6.2)));
  boxes.append("text").attr("class", "sub").attr("x", 5).attr("y", 25).text((u) => detail(u));
  boxes.filter((u) => u.kind === "group" && canSplit(u.group)).append("text").attr("class", "cv-glyph")
    .attr("x", (u) => u.w - 12).attr("y", 25).text("▸")
    .on("click", (e, u) => { e.stopPropagation(); split(u.key); });
  boxes.filter((u) => u.kind === "group" && canCollapse(u.group)).append("text").attr("class", "cv-glyph")
    .attr("x", (u) => u.w - (canSplit(u.group) ? 24 : 12)).attr("y", 25).text("▴")
    .on("click", (e, u) => { e.stopPropagation(); collapse(u.key); });
  boxes.append("title").text((u) => `${titleOf(u)}\n${u.ids.length} node(s)`);
  boxes.on("click", (_e, u) => {
    if (u.kind === "group") cv.selected = cv.selected === u.key ? "" : u.key;
    if (u.ids.length === 1) {
      state.clickedId = state.clickedId === u.ids[0] ? "" : u.ids[0];
      emit("select");
    } else {
      render();
    }
  });
}

const canSplit = (g) => g.clusters.length === 1 && cv.h.children(g.clusters[0]) !== null;
const canCollapse = (g) => g.clusters.length === 1 && cv.origin.has(g.clusters[0]);

function titleOf(u) {
  const g = state.graph;
  if (u.kind === "group") return labelOf(u.group);
  const n = g.byId.get(u.ids[0]);
  return n.kind === KIND.token ? `Emb: ${JSON.stringify(tokenText(g, n.pos))}` : n.clerp || `Logit ${n.featureIndex}`;
}

function detail(u) {
  if (u.kind !== "group") return u.kind === KIND.token ? `pos ${state.graph.byId.get(u.ids[0]).pos}` : "logit";
  const ns = u.ids.map((id) => state.graph.byId.get(id));
  if (!ns.length) return "0 features";
  const layers = ns.map((n) => n.layer);
  return `${ns.length} feat · L${Math.min(...layers)}-${Math.max(...layers)}`;
}

function boxClass(u) {
  const c = ["cv-box", u.kind];
  if (u.kind === "group" && acceptedIndex(u.ids) >= 0) c.push("accepted");
  if (u.key === cv.selected || u.ids.includes(state.clickedId)) c.push("selected");
  return c.join(" ");
}

// ---- the list -----------------------------------------------------------------------------
function renderList() {
  const h = cv.h;
  const slider = el("input", { id: "cv-groups", type: "range", min: 1, max: h.maxGroups, step: 1, value: cv.k });
  const count = el("span", { id: "cv-k" }, String(cv.k));
  slider.addEventListener("input", () => { count.textContent = slider.value; });
  slider.addEventListener("change", () => setCut(Number(slider.value)));
  const bar = el("div", { class: "cv-bar" },
    el("label", { title: "cut the hierarchy at this many groups" }, "groups ", slider, " ", count),
    el("span", { class: "muted" }, ` default ${h.defaultGroups}`),
    el("button", { id: "cv-merge", disabled: cv.picked.size < 2 ? "" : null, onclick: mergePicked, title: "merge the picked groups" }, "merge"));
  const rows = cv.groups.map((g) => row(g));
  $.list.replaceChildren(bar, ...rows);
}

function row(g) {
  const key = keyOf(g);
  const ids = membersOf(g);
  const accepted = acceptedIndex(ids);
  const pick = el("input", { type: "checkbox", class: "cv-pick", title: "pick to merge" });
  pick.checked = cv.picked.has(key);
  pick.addEventListener("change", () => {
    if (pick.checked) cv.picked.add(key);
    else cv.picked.delete(key);
    renderList();
  });
  const input = el("input", { class: "cv-label", value: labelOf(g), title: accepted >= 0 ? "the saved supernode's label" : "rename (accept to keep it)" });
  const commit = () => { if (input.value.trim() && input.value !== labelOf(g)) rename(key, input.value.trim()); };
  input.addEventListener("change", commit);
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") input.blur(); });
  const buttons = [];
  if (canSplit(g)) buttons.push(el("button", { class: "cv-split", title: "split into its two sub-groups", onclick: () => split(key) }, "split"));
  if (canCollapse(g)) buttons.push(el("button", { class: "cv-collapse", title: "collapse back into the group it was split from", onclick: () => collapse(key) }, "collapse"));
  buttons.push(accepted >= 0
    ? el("button", { class: "cv-unaccept", title: "remove the saved supernode", onclick: () => ungroup(accepted) }, "✓ accepted")
    : el("button", { class: "cv-accept", title: "keep as a supernode (saved with the annotations)", onclick: () => accept(key) }, "accept"));
  const cls = ["cv-row"];
  if (accepted >= 0) cls.push("accepted");
  if (key === cv.selected) cls.push("selected");
  return el("div", { class: cls.join(" "), "data-key": key }, pick, input,
    el("span", { class: "muted" }, `${ids.length}`), ...buttons);
}

function clip(s, k) {
  return s.length > k ? `${s.slice(0, Math.max(1, k - 1))}…` : s;
}
