// Steering from the page: set or scale the pinned feature/error nodes (supernodes included) and
// show the next-token distribution and a greedy continuation beside the original ones.
import { format } from "d3-format";
import { el } from "./dom.js";
import { KIND } from "./data.js";
import { state } from "./state.js";

const pct = format(".1%");

export function setupSteer(info) {
  if (!info.steering) return;
  document.getElementById("steer").hidden = false;
  document.getElementById("steer-go").addEventListener("click", run);
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
  };
  out.replaceChildren(el("p", { class: "muted" }, `steering ${ids.length} nodes…`));
  const r = await fetch("api/steer", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    out.replaceChildren(el("p", { class: "error" }, data.detail || String(r.status)));
    return;
  }
  out.replaceChildren(el("div", { class: "steer-cols" }, column("Original", data.original), column(`${op === "scale" ? "×" : "="}${amount} on ${ids.length} nodes`, data.steered)));
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
