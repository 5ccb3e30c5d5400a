// Unsaved annotations, kept per graph in this tab's sessionStorage so that switching graphs,
// Back and Forward, or a reload never drop them; and the merge of two sides' annotations when a
// save meets a newer file (409).

const PREFIX = "circuitlab.unsaved.";

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: unsaved work then lives only as long as the page
  }
}

// {qParams, version, base}: the graph's unsaved annotations, the file version they were made on
// and the file's annotations at that version.
export function unsavedFor(slug) {
  const s = storage();
  const raw = s && slug ? s.getItem(PREFIX + slug) : null;
  if (!raw) return null;
  try {
    const v = JSON.parse(raw);
    return v && typeof v.qParams === "object" ? v : null;
  } catch {
    return null;
  }
}

export function keepUnsaved(slug, qParams, version, base) {
  const s = storage();
  if (!s || !slug) return;
  try {
    s.setItem(PREFIX + slug, JSON.stringify({ qParams, version, base }));
  } catch (e) {
    console.warn("could not keep unsaved annotations", e); // quota: the page still has them
  }
}

export function dropUnsaved(slug) {
  const s = storage();
  if (s && slug) s.removeItem(PREFIX + slug);
}

// Slugs with unsaved annotations in this tab.
export function unsavedSlugs() {
  const s = storage();
  if (!s) return [];
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const k = s.key(i);
    if (k && k.startsWith(PREFIX)) out.push(k.slice(PREFIX.length));
  }
  return out;
}

// A save met a newer file: apply what this page changed since `base` (the annotations it read)
// onto `theirs` (the file's now). Pins: ours added, ours removed; labels and subgraph positions:
// ours where we changed them; supernodes (keyed by their members): ours where we added, renamed
// or ungrouped one, replacing any of theirs sharing a member; every other key is ours. Without
// a base, everything of ours counts as changed (union of pins, our supernodes and labels win).
export function mergeQParams(base, theirs, ours) {
  base = norm(base || {});
  const t = norm(theirs);
  const o = norm(ours);
  const added = o.pinned.filter((id) => !base.pinned.includes(id));
  const removed = base.pinned.filter((id) => !o.pinned.includes(id));
  const pinned = [...new Set([...t.pinned.filter((id) => !removed.includes(id)), ...added])];
  const clerps = applyChanges(base.clerps, t.clerps, o.clerps);
  const pos = applyChanges(base.pos, t.pos, o.pos);
  let groups = t.groups;
  for (const [key, g] of o.groups) {
    if (base.groups.has(key) && base.groups.get(key)[0] === g[0]) continue; // not ours to change
    const members = new Set(g.slice(1));
    groups = new Map([...groups].filter(([, h]) => !h.slice(1).some((id) => members.has(id))));
    groups.set(key, g);
  }
  for (const key of base.groups.keys()) if (!o.groups.has(key)) groups.delete(key);
  for (const g of groups.values()) for (const id of g.slice(1)) if (!pinned.includes(id)) pinned.push(id);
  return {
    ...theirs,
    ...ours,
    pinnedIds: pinned,
    supernodes: [...groups.values()],
    clerps: Object.entries(clerps),
    sg_pos: pos,
  };
}

// Theirs, with every key whose value we changed from base set (or deleted) as ours has it.
function applyChanges(base, theirs, ours) {
  const out = { ...theirs };
  for (const k of new Set([...Object.keys(base), ...Object.keys(ours)])) {
    if (JSON.stringify(base[k]) === JSON.stringify(ours[k])) continue;
    if (k in ours) out[k] = ours[k];
    else delete out[k];
  }
  return out;
}

// qParams as saved by this page or circuit-tracer's (raw URL strings) -> plain collections.
function norm(q) {
  const json = (v, fallback) => {
    if (typeof v !== "string") return v == null ? fallback : v;
    try { return JSON.parse(v); } catch { return fallback; }
  };
  const pins = q.pinnedIds;
  const pinned = Array.isArray(pins) ? pins.map(String) : typeof pins === "string" && pins ? pins.split(",") : [];
  const groups = new Map();
  for (const s of asArray(json(q.supernodes, []))) {
    if (!Array.isArray(s) || s.length < 2) continue;
    const g = s.map(String);
    groups.set([...g.slice(1)].sort().join("|"), g);
  }
  const clerps = Object.fromEntries(asArray(json(q.clerps, []))
    .filter((e) => Array.isArray(e) && e.length === 2).map(([k, v]) => [String(k), String(v)]));
  return { pinned, groups, clerps, pos: asObject(json(q.sg_pos, {})) };
}

function asArray(v) {
  return Array.isArray(v) ? v : [];
}

function asObject(v) {
  return v && typeof v === "object" && !Array.isArray(v) ? v : {};
}
