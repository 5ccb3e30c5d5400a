// The subgraph pane: pinned nodes, with supernodes drawn as one box whose links are the sums
// of their members' links. Hold G and click boxes to pick them; releasing G groups them.
import { drag } from "d3-drag";
import { format } from "d3-format";
import { select } from "d3-selection";
import { KIND, nodeTitle } from "./data.js";
import { el } from "./dom.js";
import { emit, groupNodes, setSupernodeLabel, state, togglePin, ungroup } from "./state.js";

const num = format(".3~g");
const BOX_W = 130;
const BOX_H = 30;
export const grouping = { held: false, picked: new Set() };

function units() {
  const g = state.graph;
  const inGroup = new Map();
  const out = [];
  state.supernodes.forEach((s, i) => {
    const ids = s.slice(1).filter((id) => g.byId.has(id));
    if (ids.length < 1) return;
    const key = `sn:${[...ids].sort().join("|")}`;
    const unit = { key, ids, label: s[0], index: i, super: true };
    ids.forEach((id) => inGroup.set(id, unit));
    out.push(unit);
  });
  for (const id of state.pinned) {
    if (inGroup.has(id) || !g.byId.has(id)) continue;
    const n = g.byId.get(id);
    const unit = { key: id, ids: [id], label: nodeTitle(g, n, state.clerps), super: false };
    inGroup.set(id, unit);
    out.push(unit);
  }
  return { out, inGroup };
}

function place(unitsList, width, height) {
  const g = state.graph;
  const rows = g.nLayers + 2;
  const placed = [];
  const overlaps = (u) => placed.some((v) => Math.abs(v.x - u.x) < BOX_W + 6 && Math.abs(v.y - u.y) < BOX_H + 4);
  const clamp = (u) => {
    u.x = Math.max(0, Math.min(width - BOX_W, u.x));
    u.y = Math.max(0, Math.min(height - BOX_H, u.y));
  };
  for (const u of unitsList) {
    const saved = state.sgPos[u.key];
    if (Array.isArray(saved) && saved.length === 2) {
      [u.x, u.y] = saved;
      clamp(u);
      placed.push(u);
    }
  }
  // Others go where their layer and position say, then sideways (and down) until they fit.
  for (const u of unitsList) {
    if (placed.includes(u)) continue;
    const ns = u.ids.map((id) => g.byId.get(id));
    const row = Math.max(...ns.map((n) => (n.kind === KIND.token ? 0 : n.kind === KIND.logit ? rows - 1 : n.layer + 1)));
    const pos = ns.reduce((a, n) => a + n.pos, 0) / ns.length;
    u.x = 10 + (pos / Math.max(1, g.nPos - 1)) * Math.max(10, width - BOX_W - 20);
    u.y = 10 + (1 - row / Math.max(1, rows - 1)) * Math.max(10, height - BOX_H - 20);
    clamp(u);
    for (let tries = 0; overlaps(u) && tries < 200; tries++) {
      u.x -= BOX_W + 8;
      if (u.x < 0) {
        u.x = width - BOX_W - 4;
        u.y += u.y + 2 * BOX_H < height ? BOX_H + 6 : -(BOX_H + 6);
      }
      clamp(u);
    }
    placed.push(u);
  }
}

function unitLinks(list, inGroup) {
  const sums = new Map();
  for (const u of list) {
    for (const id of u.ids) {
      for (const l of state.graph.byId.get(id).outputs) {
        const v = inGroup.get(l.target.id);
        if (!v || v === u) continue;
        const key = `${u.key}→${v.key}`;
        const s = sums.get(key) || { from: u, to: v, weight: 0 };
        s.weight += l.weight;
        sums.set(key, s);
      }
    }
  }
  return [...sums.values()];
}

export function renderSubgraph(svgEl, listEl) {
  const svg = select(svgEl);
  svg.selectAll("*").remove();
  listEl.replaceChildren();
  if (!state.graph) return;
  const width = svgEl.clientWidth || 400;
  const height = svgEl.clientHeight || 300;
  const { out, inGroup } = units();
  if (!out.length) {
    svg.append("text").attr("x", 12).attr("y", 24).attr("class", "muted").text("Ctrl/Cmd-click nodes to pin them here.");
    renderList(listEl);
    return;
  }
  place(out, width, height);
  const links = unitLinks(out, inGroup);
  const maxAbs = Math.max(1e-9, ...links.map((l) => Math.abs(l.weight)));
  const center = (u) => [u.x + BOX_W / 2, u.y + BOX_H / 2];
  const linkSel = svg.append("g").attr("class", "sg-links").selectAll("line").data(links).join("line")
    .attr("class", (l) => (l.weight >= 0 ? "pos" : "neg"))
    .attr("stroke-width", (l) => 0.8 + 5 * Math.sqrt(Math.abs(l.weight) / maxAbs));
  linkSel.append("title").text((l) => `${l.from.label} → ${l.to.label}: ${num(l.weight)}`);
  const positionLinks = () => linkSel
    .attr("x1", (l) => center(l.from)[0]).attr("y1", (l) => center(l.from)[1])
    .attr("x2", (l) => center(l.to)[0]).attr("y2", (l) => center(l.to)[1]);
  positionLinks();

  const nodes = svg.append("g").selectAll("g").data(out).join("g")
    .attr("class", (u) => nodeClass(u))
    .attr("data-key", (u) => u.key)
    .attr("data-ids", (u) => u.ids.join(","))
    .attr("transform", (u) => `translate(${u.x},${u.y})`);
  nodes.append("rect").attr("width", BOX_W).attr("height", BOX_H).attr("rx", 5);
  nodes.append("text").attr("x", 6).attr("y", 13).text((u) => clip(u.label, 22));
  nodes.append("text").attr("class", "sub").attr("x", 6).attr("y", 25)
    .text((u) => (u.super ? `${u.ids.length} nodes` : detail(state.graph.byId.get(u.ids[0]))));

  nodes.on("click", (e, u) => {
    if (e.defaultPrevented) return; // end of a drag
    if (grouping.held) {
      if (grouping.picked.has(u.key)) grouping.picked.delete(u.key);
      else grouping.picked.add(u.key);
      select(e.currentTarget).attr("class", nodeClass(u));
      grouping.units = out;
      return;
    }
    if ((e.ctrlKey || e.metaKey) && !u.super) return togglePin(u.ids[0]);
    state.clickedId = state.clickedId === u.ids[0] ? "" : u.ids[0];
    emit("select");
  });
  nodes.on("dblclick", (_e, u) => {
    if (!u.super) return;
    const input = listEl.querySelector(`input[data-index="${u.index}"]`);
    if (input) { input.focus(); input.select(); }
  });
  nodes.call(drag()
    .on("drag", function (e, u) {
      u.x = Math.max(0, Math.min(width - BOX_W, u.x + e.dx));
      u.y = Math.max(0, Math.min(height - BOX_H, u.y + e.dy));
      select(this).attr("transform", `translate(${u.x},${u.y})`);
      positionLinks();
    })
    .on("end", (e, u) => {
      if (e.sourceEvent && (Math.abs(e.x - e.subject.x) > 0 || Math.abs(e.y - e.subject.y) > 0)) {
        state.sgPos[u.key] = [Math.round(u.x), Math.round(u.y)];
        emit("layout", { dirty: true });
      }
    }));
  grouping.units = out;
  renderList(listEl);
}

// A new clicked node only re-marks the boxes (the drawing stays, so a double-click lands).
export function markSubgraphSelection(svgEl) {
  select(svgEl).selectAll("g.sg-node").attr("class", (u) => nodeClass(u));
}

function nodeClass(u) {
  const classes = ["sg-node"];
  if (u.super) classes.push("super");
  if (u.ids.includes(state.clickedId)) classes.push("clicked");
  if (grouping.picked.has(u.key)) classes.push("picked");
  return classes.join(" ");
}

// Releasing G: group the picked boxes (their member nodes) into one supernode.
export function finishGrouping() {
  const picked = (grouping.units || []).filter((u) => grouping.picked.has(u.key));
  grouping.picked.clear();
  grouping.held = false;
  const ids = picked.flatMap((u) => u.ids);
  if (picked.length >= 2) groupNodes(ids);
  else emit("pins");
}

function renderList(listEl) {
  state.supernodes.forEach((s, i) => {
    const input = el("input", { class: "sn-label", "data-index": i, value: s[0] });
    const commit = () => { if (input.value !== s[0]) setSupernodeLabel(i, input.value); };
    input.addEventListener("change", commit);
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") input.blur(); });
    listEl.append(el("div", { class: "sn-row" }, input,
      el("span", { class: "muted" }, `${s.length - 1} nodes`),
      el("button", { class: "ungroup", onclick: () => ungroup(i) }, "ungroup")));
  });
}

function detail(n) {
  if (!n) return "";
  if (n.kind === KIND.feature) return `L${n.layer} #${n.featureIdx} @${n.pos}`;
  if (n.kind === KIND.error) return `error L${n.layer} @${n.pos}`;
  return n.kind;
}

function clip(s, k) {
  return s.length > k ? `${s.slice(0, k - 1)}…` : s;
}
