// Tracing from the page: POST api/trace, then follow every job over the api/ws websocket.
import { el } from "./dom.js";

const jobs = new Map();
let mine = new Set();

export function setupTrace(info, { onDone }) {
  const box = document.getElementById("trace");
  if (!info.tracing) return;
  box.hidden = false;
  const prompt = document.getElementById("trace-prompt");
  const targets = document.getElementById("trace-targets");
  const model = document.getElementById("trace-model");
  if (info.models.length > 1) {
    model.hidden = false;
    model.replaceChildren(...info.models.map((m) => el("option", { value: m }, m)));
  }
  const go = async () => {
    const text = prompt.value;
    if (!text.trim()) return prompt.focus();
    const body = {
      prompt: text,
      targets: targets.value.split("|").filter((t) => t.length),
      model: info.models.length > 1 ? model.value : undefined,
    };
    const r = await fetch("api/trace", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json();
    if (!r.ok) return showError(data.detail || r.statusText);
    mine.add(data.job.id);
    update(data.job, onDone);
  };
  document.getElementById("trace-go").addEventListener("click", go);
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  connect(onDone);
}

function connect(onDone) {
  const url = new URL("api/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "jobs") msg.jobs.forEach((j) => update(j, onDone));
    else if (msg.type === "job") update(msg.job, onDone);
  };
  ws.onclose = () => setTimeout(() => connect(onDone), 1000);
}

const FINISHED = new Set(["done", "failed", "cancelled"]);

function update(job, onDone) {
  const before = jobs.get(job.id);
  // A fast job's "done" can come over the websocket before the POST that made it answers; that
  // answer's older snapshot must not turn the finished job back into a running one.
  if (before && FINISHED.has(before.status) && !FINISHED.has(job.status)) job = before;
  jobs.set(job.id, job);
  render();
  if (job.status === "done" && mine.has(job.id)) {
    mine.delete(job.id);
    onDone(job);
  }
}

function render() {
  const list = document.getElementById("jobs");
  const recent = [...jobs.values()].sort((a, b) => a.created - b.created).slice(-6);
  list.replaceChildren(...recent.map((j) => {
    const bar = el("span", { class: "progress" }, el("span", {}));
    bar.firstChild.style.width = `${Math.round(100 * j.progress)}%`;
    const cancel = el("button", { class: "cancel", onclick: () => fetch(`api/jobs/${j.id}`, { method: "DELETE" }) }, "cancel");
    const open = el("a", { href: `?slug=${encodeURIComponent(j.slug)}` }, "open");
    return el("li", { class: `job job-${j.status}`, "data-job": j.id },
      el("span", { class: "job-prompt", title: j.prompt }, j.prompt.length > 40 ? `${j.prompt.slice(0, 39)}…` : j.prompt),
      el("span", { class: "job-status" }, j.status === "running" ? `${j.phase}${j.total ? ` ${j.done}/${j.total}` : ""}` : j.status),
      j.status === "running" ? bar : null,
      j.status === "queued" || j.status === "running" ? cancel : null,
      j.status === "done" ? open : null,
      j.error ? el("span", { class: "error", title: j.error }, j.error.slice(0, 80)) : null);
  }));
}

function showError(text) {
  const list = document.getElementById("jobs");
  list.prepend(el("li", { class: "job job-failed" }, el("span", { class: "error" }, text)));
}
