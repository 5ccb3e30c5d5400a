// Canvas heatmaps with row/column labels (attention patterns, patching sweeps) and the colour
// scales of the heads view. A heatmap returns a hit test: page event -> {i, j, value} or null.

export const CLASS_COLORS = {
  previous_token: "#2563eb",
  duplicate_token: "#16a34a",
  induction: "#dc2626",
  sink: "#a3a3a3",
  diffuse: "#e7e5e4",
};

// 0..1 -> white..colour (rgb triple string like "37,99,235").
export function sequential(rgb) {
  const [r, g, b] = rgb.split(",").map(Number);
  return (v) => {
    if (v == null || Number.isNaN(v)) return "#f3f3f3";
    const t = Math.max(0, Math.min(1, v));
    const mix = (c) => Math.round(255 + (c - 255) * t);
    return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
  };
}

// -m..m -> red..white..blue (positive is blue, as for graph links).
export function diverging(m) {
  const pos = sequential("37,99,235");
  const neg = sequential("220,38,38");
  const scale = m > 0 ? m : 1;
  return (v) => (v == null || Number.isNaN(v) ? "#f3f3f3" : v >= 0 ? pos(v / scale) : neg(-v / scale));
}

export function maxAbs(values) {
  let m = 0;
  for (const v of values) if (v != null && Number.isFinite(v)) m = Math.max(m, Math.abs(v));
  return m;
}

function clip(text, n) {
  text = String(text).replace(/\n/g, "⏎");
  return text.length > n ? `${text.slice(0, Math.max(1, n - 1))}…` : text;
}

// Draw rows x cols cells into `canvas` (sized to its parent), labels left and below.
// opts: {rows, cols, value(i, j), color(v), rowLabels, colLabels, rotate, marks: [[i, j]]}
export function drawHeatmap(canvas, opts) {
  const { rows, cols, value, color } = opts;
  const wrap = canvas.parentElement;
  const width = wrap.clientWidth;
  const height = opts.height || wrap.clientHeight;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "10px system-ui, sans-serif";
  const rowLabels = (opts.rowLabels || []).map((t) => clip(t, 12));
  const colLabels = (opts.colLabels || []).map((t) => clip(t, 12));
  const left = Math.min(90, 8 + Math.max(0, ...rowLabels.map((t) => ctx.measureText(t).width)));
  const colText = Math.max(0, ...colLabels.map((t) => ctx.measureText(t).width));
  const bottom = opts.rotate === false ? 16 : Math.min(80, 10 + colText * 0.75);
  const cw = Math.max(1, (width - left - 6) / Math.max(1, cols));
  const ch = Math.max(1, (height - bottom - 4) / Math.max(1, rows));
  const cell = opts.square ? Math.min(cw, ch) : null;
  const w = cell || cw;
  const h = cell || ch;
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      ctx.fillStyle = color(value(i, j));
      ctx.fillRect(left + j * w, 4 + i * h, Math.ceil(w), Math.ceil(h));
    }
  }
  ctx.strokeStyle = "#f59e0b";
  ctx.lineWidth = 2;
  for (const [i, j] of opts.marks || []) ctx.strokeRect(left + j * w + 1, 4 + i * h + 1, w - 2, h - 2);
  ctx.fillStyle = "#444";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const rowEvery = Math.max(1, Math.ceil(11 / h));
  rowLabels.forEach((t, i) => { if (i % rowEvery === 0) ctx.fillText(t, left - 4, 4 + (i + 0.5) * h); });
  const colEvery = Math.max(1, Math.ceil(11 / w));
  colLabels.forEach((t, j) => {
    if (j % colEvery) return;
    const x = left + (j + 0.5) * w;
    const y = 4 + rows * h + 4;
    ctx.save();
    ctx.translate(x, y);
    if (opts.rotate !== false) ctx.rotate(-Math.PI / 4);
    ctx.textAlign = opts.rotate !== false ? "right" : "center";
    ctx.textBaseline = opts.rotate !== false ? "middle" : "top";
    ctx.fillText(t, 0, 0);
    ctx.restore();
  });
  return (e) => {
    const rect = canvas.getBoundingClientRect();
    const j = Math.floor((e.clientX - rect.left - left) / w);
    const i = Math.floor((e.clientY - rect.top - 4) / h);
    if (i < 0 || j < 0 || i >= rows || j >= cols) return null;
    return { i, j, value: value(i, j), x: left + (j + 0.5) * w, y: 4 + (i + 0.5) * h };
  };
}
