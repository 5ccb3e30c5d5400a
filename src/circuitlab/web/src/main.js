// The lab page: loads the graph list and a graph, wires the panes to the shared state.
import { parseGraph } from "./data.js";
import { renderFeatureCard } from "./featurecard.js";
import { GraphView, timings } from "./graphview.js";
import { renderInspector } from "./inspector.js";
import { applyQParams, emit, on, qParams, state, togglePin, writeUrl } from "./state.js";
import { finishGrouping, grouping, renderSubgraph } from "./subgraph.js";
import { setupSteer } from "./steer.js";
import { setupTrace } from "./trace.js";
import { analyseGraph, applyUrl as applyHeadsUrl, hs, moveSelection, setGraph, setupHeads } from "./heads.js";
import { loadFaithfulness, loadValidationList, renderFaithfulness, showDiff, validation } from "./validation.js";
import { el } from "./dom.js";

const $ = (id) => document.getElementById(id);
let info = { features: false, tracing: false, models: [] };
let view;

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-cache" });
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

async function loadList(selected) {
  const [{ graphs }, files] = await Promise.all([getJSON("data/graph-metadata.json"), loadValidationList()]);
  const select = $("graph-select");
  const options = graphs.map((g) => el("option", { value: g.slug }, g.title_prefix ? `${g.title_prefix} ${g.slug}` : g.slug));
  if (files.diffs.length) {
    options.push(el("optgroup", { label: "diffs (circuitlab compare)" }, ...files.diffs.map((d) =>
      el("option", { value: `diff:${d.file}` }, d.a ? `${d.a} vs ${d.b}` : d.file))));
  }
  select.replaceChildren(...options);
  select.hidden = !options.length;
  if (selected) select.value = selected;
  return graphs;
}

async function openDiff(file) {
  state.diffFile = file;
  showView("diff");
  $("graph-select").value = `diff:${file}`;
  await showDiff(file, { openGraph });
}

async function openGraph(slug, clickedId) {
  showView("graph");
  const url = clickedId ? new URLSearchParams({ slug, clickedId }) : null;
  history.replaceState(null, "", `?slug=${encodeURIComponent(slug)}`);
  await loadGraph(slug, url);
}

function setPruning(t) {
  const p = $("prune");
  if (t > Number(p.max)) p.max = String(t);
  p.value = String(t);
  state.pruning = Number(p.value);
  emit("prune", { dirty: true });
}

async function loadGraph(slug, url) {
  const t0 = performance.now();
  const data = await getJSON(`data/${encodeURIComponent(slug)}.json`);
  state.slug = slug;
  state.graph = parseGraph(data);
  applyQParams(state.graph.qParams, url);
  timings.parse = performance.now() - t0;
  $("graph-select").value = slug;
  const prune = $("prune");
  prune.max = String(Math.max(state.graph.meta.node_threshold || 0.8, state.pruning, 0.01));
  prune.value = String(state.pruning);
  document.title = `circuitlab · ${slug}`;
  setGraph(slug, state.graph.meta.prompt);
  view.zoom = { k: 1, x: 0, y: 0 };
  emit("graph");
  loadFaithfulness(slug, { setPruning });
  state.dirty = false;
  updateSaveState();
  if (state.graph.duplicates) setStatus(`${state.graph.duplicates} duplicate node ids ignored (old circuit-tracer file)`);
}

// The graph and heads views share the page; the graph pane redraws itself when shown again
// (its ResizeObserver sees the size change).
function showView(which) {
  if (which === "heads" && !info.heads) which = "graph";
  state.view = which;
  document.body.classList.toggle("view-heads", which === "heads");
  document.body.classList.toggle("view-diff", which === "diff");
  $("heads-view").hidden = which !== "heads";
  $("diff-view").hidden = which !== "diff";
  $("tab-graph").classList.toggle("on", which === "graph");
  $("tab-heads").classList.toggle("on", which === "heads");
  writeUrl();
}

function setStatus(text) {
  $("save-state").textContent = text;
}

function updateSaveState() {
  setStatus(state.dirty ? "unsaved changes" : "");
  $("save").classList.toggle("attention", state.dirty);
}

async function save() {
  if (!state.slug) return;
  const r = await fetch(`save_graph/${encodeURIComponent(state.slug)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ qParams: qParams() }),
  });
  if (r.ok) {
    state.dirty = false;
    updateSaveState();
    setStatus("saved");
  } else {
    setStatus(`save failed: ${(await r.json().catch(() => ({}))).detail || r.status}`);
  }
}

function updateCounts() {
  const g = state.graph;
  if (!g || !view.visible) return;
  $("counts").textContent = `${view.visible.length}/${g.nodes.length} nodes · ${view.links.length}/${g.links.length} links`;
  $("prune-value").textContent = state.pruning.toFixed(2);
}

function render(what) {
  if (!state.graph) return;
  if (what === "graph" || what === "prune") {
    view.redraw();
  } else if (what === "select" || what === "pins" || what === "labels") {
    view.refreshHighlights(what);
  }
  if (what !== "hover" && what !== "layout") {
    renderInspector($("inspector"));
    renderSubgraph($("subgraph"), $("supernodes"));
  }
  if (what === "graph" || what === "select") renderFeatureCard($("feature"), info.features);
  if (what === "prune" && validation.faith) renderFaithfulness();
  updateCounts();
  updateSaveState();
}

function keys() {
  window.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName);
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
      e.preventDefault();
      save();
      return;
    }
    if (typing) return;
    if (state.view === "heads" && e.key.startsWith("Arrow") && moveSelection(e.key)) {
      e.preventDefault();
      return;
    }
    if (e.key === "Escape") {
      $("help").hidden = true;
      if (state.clickedId) { state.clickedId = ""; emit("select"); }
    } else if (e.key === "g" || e.key === "G") {
      grouping.held = true;
      document.body.classList.add("grouping");
    } else if (e.key === "p" && state.clickedId) {
      togglePin(state.clickedId);
    } else if (e.key === "[" || e.key === "]") {
      const p = $("prune");
      const v = Math.min(Number(p.max), Math.max(Number(p.min), state.pruning + (e.key === "]" ? 0.05 : -0.05)));
      p.value = String(v);
      state.pruning = Number(p.value);
      emit("prune");
    } else if ((e.key === "h" || e.key === "H") && info.heads) {
      showView(state.view === "heads" ? "graph" : "heads");
    } else if (e.key === "0" && state.view === "graph") {
      view.resetZoom();
    } else if (e.key === "?") {
      $("help").hidden = !$("help").hidden;
    } else if (e.key === "/" && info.tracing) {
      e.preventDefault();
      $("trace-prompt").focus();
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.key === "g" || e.key === "G") {
      document.body.classList.remove("grouping");
      finishGrouping();
    }
  });
  window.addEventListener("blur", () => { grouping.held = false; grouping.picked.clear(); });
}

async function main() {
  view = new GraphView($("graph-wrap"));
  on(render);
  keys();
  $("save").addEventListener("click", save);
  $("help-toggle").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  $("graph-select").addEventListener("change", (e) => {
    const value = e.target.value;
    if (value.startsWith("diff:")) return openDiff(value.slice(5));
    openGraph(value, null);
  });
  let pruneTimer = 0;
  $("prune").addEventListener("input", (e) => {
    state.pruning = Number(e.target.value);
    $("prune-value").textContent = state.pruning.toFixed(2);
    cancelAnimationFrame(pruneTimer);
    pruneTimer = requestAnimationFrame(() => emit("prune", { dirty: true }));
  });
  window.addEventListener("beforeunload", writeUrl);
  info = await getJSON("api/info").catch(() => info);
  const url = new URLSearchParams(location.search);
  const graphs = await loadList(url.get("slug"));
  setupTrace(info, {
    onDone: async (job) => {
      await loadList(job.slug);
      history.replaceState(null, "", `?slug=${encodeURIComponent(job.slug)}`);
      await loadGraph(job.slug, null);
    },
  });
  setupSteer(info);
  if (setupHeads(info, { openGraph: (s) => openGraph(s, null) })) {
    $("tabs").hidden = false;
    $("graph-heads").hidden = false;
    $("tab-graph").addEventListener("click", () => {
      if (!state.graph && graphs[0]) return openGraph(graphs[0].slug, null);
      if (state.slug) $("graph-select").value = state.slug;
      showView("graph");
    });
    $("tab-heads").addEventListener("click", () => showView("heads"));
    $("graph-heads").addEventListener("click", () => { showView("heads"); analyseGraph(); });
  }
  if (url.get("view") === "heads" || (!graphs.length && info.heads && !url.get("diff"))) showView("heads");
  const slug = url.get("slug") || (graphs[0] && graphs[0].slug);
  if (url.get("diff")) await openDiff(url.get("diff"));
  else if (slug) await loadGraph(slug, url);
  if (state.view === "heads") applyHeadsUrl(url);
  else $("inspector").replaceChildren(el("p", { class: "muted" }, "No graphs yet: trace a prompt or write graph files."));
  document.body.dataset.ready = "1";
}

// Hooks for tests and for measuring (read-only use).
window.__lab = {
  state,
  heads: hs,
  validation,
  timings,
  screenPos: (id) => view && view.screenPos(id),
  zoom: () => view && { ...view.zoom },
  repaint: () => { const t0 = performance.now(); view.repaint(); return performance.now() - t0; },
  redraw: () => { const t0 = performance.now(); view.redraw(); return performance.now() - t0; },
};

main().catch((e) => {
  console.error(e);
  document.body.dataset.ready = "error";
  $("inspector").replaceChildren(el("p", { class: "error" }, String(e.message || e)));
});
