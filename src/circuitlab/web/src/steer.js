// Steering from the page: set or scale the pinned feature/error nodes (supernodes included) and
// show the next-token distribution and a greedy continuation beside the original ones. The mode
// is the CLI's (circuitlab intervene): iterative patching with attention frozen or live,
// constrained layers (--constrained-layers A-B) or direct effects; every result names its mode.
import { format } from "d3-format";
import { el } from "./dom.js";
import { KIND } from "./data.js";
import { state } from "./state.js";

const pct = format(".1%");

export function setupSteer(info) {
  if (!info.steering) return;
  document.getElementById("steer").hidden = false;
  document.getElementById("steer-go").addEventListener("click", run);
  const mode = document.getElementById("steer-mode");
  mode.addEventListener("change", () => {
    document.getElementById("steer-layers").hidden = mode.value !== "constrained";
  });
}

// The request fields of the chosen mode (as --constrained-layers / --no-freeze-attention).
function modeFields(ids) {
  const mode = document.getElementById("steer-mode").value;
  if (mode === "iterative-live") return { constrained_layers: null, freeze_attention: false };
  if (mode === "direct") return { constrained_layers: "all", freeze_attention: true };
  if (mode !== "constrained") return { constrained_layers: null, freeze_attention: true };
  const typed = document.getElementById("steer-layers").value.trim();
  if (typed) return { constrained_layers: typed, freeze_attention: true };
  const layers = ids.map((id) => state.graph.byId.get(id).layer); // default: the nodes' span
  return { constrained_layers: `${Math.min(...layers)}-${Math.max(...layers)}`, freeze_attention: true };
}

function steerable() {
  const g = state.graph;
  const ids = new Set(state.pinned);
  for (const s of state.supernodes) s.slice(1).forEach((id) => ids.add(id));
  return [...ids].filter((id) => {
    const n = g.byId.get(id);
    return n && (n.kind === KIND.feature || n.kind === KIND.error);
  });
}

async function run() {
  const out = document.getElementById("steer-result");
  const ids = steerable();
  if (!ids.length) {
    out.replaceChildren(el("p", { class: "muted" }, "Pin feature or error nodes first."));
    return;
  }
  const op = document.getElementById("steer-op").value;
  const amount = Number(document.getElementById("steer-amount").value);
  const body = {
    slug: state.slug,
    node_ids: ids,
    [op]: amount,
    max_new_tokens: Number(document.getElementById("steer-tokens").value) || 0,
    ...modeFields(ids),
  };
  out.replaceChildren(el("p", { class: "muted" }, `steering ${ids.length} nodes…`));
  const r = await fetch("api/steer", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    out.replaceChildren(el("p", { class: "error" }, data.detail || String(r.status)));
    return;
  }
  const mode = data.mode ? data.mode.label : "iterative patching, attention frozen";
  out.replaceChildren(
    el("p", { class: "steer-mode", id: "steer-mode-used" }, `mode: ${mode}`),
    el("div", { class: "steer-cols" }, column("Original", data.original), column(`${op === "scale" ? "×" : "="}${amount} on ${ids.length} nodes`, data.steered)),
  );
}

function column(title, side) {
  return el("div", { class: "steer-col" },
    el("h3", {}, title),
    el("table", { class: "links" }, ...side.top.map((t) => {
      const bar = el("span", { class: "bar pos" });
      bar.style.width = `${Math.round(60 * t.prob)}px`;
      return el("tr", {}, el("td", { class: "chip pos" }, JSON.stringify(t.token)), el("td", {}, bar), el("td", { class: "w" }, pct(t.prob)));
    })),
    side.completion ? el("p", { class: "completion" }, "→ ", el("span", {}, side.completion)) : null);
}
