// The node inspector: what the clicked node is, and its strongest inputs and outputs. While the
// pointer rests on another node of the graph it shows that one (the hover card), with a note.
// An edge's "heads" button opens its head loadings in the attention panel (qk.js).
import { format } from "d3-format";
import { KIND, labelOf, nodeTitle, tokenText } from "./data.js";
import { cardId, emit, isVisible, setClerp, state, togglePin } from "./state.js";
import { el } from "./dom.js";
import { attentionAvailable, showEdge } from "./qk.js";

const num = format(".3~g");
const pct = format(".0%");
const TOP = 25;

export function renderInspector(root) {
  const g = state.graph;
  const id = g ? cardId() : "";
  const n = id ? g.byId.get(id) : null;
  root.replaceChildren();
  if (!n) {
    root.append(el("p", { class: "muted" }, g || !state.missing ? "Click a node." : ""));
    return;
  }
  const pinned = state.pinned.includes(n.id);
  if (n.id !== state.clickedId) {
    root.append(el("p", { class: "hover-note" }, state.hoverFrozen
      ? "hover card, frozen: Esc or a move over the graph releases it"
      : "hover card: hold Shift to freeze it and move to it; click to keep"));
  }
  root.append(
    el("div", { class: "node-head" },
      el("span", { class: `kind kind-${n.kind}` }, n.kind),
      el("strong", { id: "inspector-title" }, nodeTitle(g, n, state.clerps)),
      el("button", { id: "pin-clicked", onclick: () => togglePin(n.id) }, pinned ? "Unpin" : "Pin"),
    ),
    facts(g, n),
  );
  if (n.kind === KIND.feature) {
    const input = el("input", {
      id: "label-input",
      value: labelOf(n, state.clerps) || "",
      placeholder: "label this feature (Enter)",
    });
    const commit = () => {
      if (input.value.trim() !== (labelOf(n, state.clerps) || "")) setClerp(n.featureIndex, input.value.trim());
    };
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") { commit(); input.blur(); } });
    input.addEventListener("change", commit);
    root.append(el("div", { class: "label-edit" }, input));
  }
  const linkTypes = el("div", { class: "link-type" }, "highlight ",
    ...["input", "output", "both"].map((t) =>
      el("button", {
        class: state.linkType === t ? "on" : "",
        onclick: () => { state.linkType = t; emit("select"); },
      }, t)));
  root.append(linkTypes);
  root.append(linkTable("Inputs", n.inputs, (l) => l.source, n.absIn));
  root.append(linkTable("Outputs", n.outputs, (l) => l.target, null));
}

function facts(g, n) {
  const rows = [];
  if (n.layer != null && !Number.isNaN(n.layer)) rows.push(["layer", n.layer]);
  rows.push(["position", `${n.pos} ${JSON.stringify(tokenText(g, n.pos))}`]);
  if (n.kind === KIND.feature) rows.push(["feature", `#${n.featureIdx} (index ${n.featureIndex})`]);
  if (n.activation != null) rows.push(["activation", num(n.activation)]);
  if (n.influence != null) rows.push(["influence (cumulative)", num(n.influence)]);
  if (n.kind === KIND.logit) rows.push(["probability", num(n.prob)]);
  rows.push(["node id", n.id]);
  return el("dl", { class: "facts" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
}

function linkTable(title, links, other, absIn) {
  const shown = links.filter((l) => isVisible(other(l))).slice(0, TOP);
  const max = shown.length ? Math.abs(shown[0].weight) : 1;
  const table = el("table", { class: "links" });
  for (const l of shown) {
    const n = other(l);
    const w = l.weight;
    const bar = el("span", { class: `bar ${w >= 0 ? "pos" : "neg"}` });
    bar.style.width = `${Math.round((40 * Math.abs(w)) / (max || 1))}px`;
    const row = el("tr", { class: "link-row", "data-node": n.id },
      el("td", { class: "w" }, num(w)),
      el("td", {}, bar),
      el("td", { class: "name" }, nodeTitle(state.graph, n, state.clerps)),
      el("td", { class: "muted" }, absIn ? pct(Math.abs(w) / absIn) : ""),
    );
    if (attentionAvailable() && (l.target.kind === KIND.feature || l.target.kind === KIND.logit)) {
      row.append(el("td", {}, el("button", {
        class: "edge-heads",
        title: "which attention heads carry this edge (head loadings)",
        onclick: (e) => {
          e.stopPropagation();
          const g = state.graph;
          showEdge([[l.source.id, l.target.id]], `${nodeTitle(g, l.source, state.clerps)} → ${nodeTitle(g, l.target, state.clerps)}`);
        },
      }, "heads")));
    }
    row.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey) return togglePin(n.id);
      state.clickedId = n.id;
      emit("select");
    });
    table.append(row);
  }
  const hidden = links.length - links.filter((l) => isVisible(other(l))).length;
  return el("div", { class: "link-list" },
    el("h3", {}, `${title} (${links.length}${hidden ? `, ${hidden} pruned` : ""})`),
    shown.length ? table : el("p", { class: "muted" }, "none"));
}
