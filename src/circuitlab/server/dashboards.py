"""Which dashboard store serves which graph.

A feature ``(layer, idx)`` means something only within its transcoder set, so the lab serves a
graph's feature cards from the store built from that graph's set, never from another's. The
server takes any number of stores (``--features_dir`` repeated, or a folder whose subfolders
are stores). Each store's ``build.json`` records ``transcoder_set`` (name, model, fingerprint:
``transcoders.identity``); each graph file records the same in ``metadata.transcoder_set``.

The rules, in order (``DashboardStores.match``):

1. **fingerprint**: the store whose fingerprint equals the graph's.
2. **name**: when one side records no fingerprint (a store built, or a graph traced, before
   circuitlab recorded them), a store whose recorded set name equals the graph's
   (``transcoder_set.name``, else ``transcoder_name``, else ``scan``).
3. **unknown**: a graph that records no fingerprint (older circuitlab, circuit-tracer,
   Neuronpedia) cannot be checked; when the server has exactly one store, that store is served
   with a note saying the match is unchecked. With several stores nothing is guessed.

A graph that records its fingerprint never gets another set's store, nor a store that records
none (whose set is unknown): the card says "No dashboard for this transcoder set" and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitlab.features.store import read_build_info
from circuitlab.graph.export import FeatureStore

FeatureDirs = str | Path | Sequence[str | Path] | None
NO_DASHBOARD = "No dashboard for this transcoder set"
UNKNOWN_STORE = "Dashboard store of unknown transcoder set"


@dataclass(frozen=True)
class DashboardStore:
    """One store: ``root`` holds ``index.json.gz``; ``key`` names it in URLs."""

    key: str
    root: Path
    name: str | None
    model: str | None
    fingerprint: str | None

    @classmethod
    def read(cls, key: str, root: Path) -> DashboardStore:
        info = read_build_info(root) or {}
        tset = info.get("transcoder_set")
        tset = tset if isinstance(tset, dict) else {}
        name = tset.get("name") or info.get("transcoders")
        model = tset.get("model") or info.get("model")
        fp = tset.get("fingerprint")
        return cls(key, root, _str(name), _str(model), _str(fp))

    def public(self) -> dict[str, Any]:
        """What the page may see (local paths cut to their last part)."""
        return {
            "key": self.key,
            "name": self.name and _short(self.name),
            "model": self.model and _short(self.model),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class StoreMatch:
    """The store for one graph (None: no dashboards), how it matched, and what to tell the user."""

    store: DashboardStore | None
    match: str | None  # "fingerprint", "name", "unknown" or None
    note: str

    def public(self) -> dict[str, Any]:
        return {
            "store": self.store.key if self.store else None,
            "match": self.match,
            "note": self.note,
            "store_set": self.store.public() if self.store else None,
        }


@dataclass(frozen=True)
class GraphSet:
    """The transcoder set a graph file records (any part may be missing)."""

    name: str | None
    model: str | None
    fingerprint: str | None

    @classmethod
    def of(cls, metadata: dict[str, Any]) -> GraphSet:
        tset = metadata.get("transcoder_set")
        tset = tset if isinstance(tset, dict) else {}
        name = tset.get("name") or metadata.get("transcoder_name") or metadata.get("scan")
        model = tset.get("model") or metadata.get("model_name")
        return cls(_str(name), _str(model), _str(tset.get("fingerprint")))

    def describe(self) -> str:
        return " / ".join(_short(x) for x in (self.model, self.name) if x) or "unnamed"


class DashboardStores:
    """The server's stores, in the order given."""

    def __init__(self, stores: Sequence[DashboardStore]):
        self.stores = list(stores)
        self.by_key = {s.key: s for s in self.stores}

    @classmethod
    def open(cls, dirs: FeatureDirs) -> DashboardStores:
        """Stores from ``dirs``: each a store (``index.json.gz`` in it or in ``features/``) or a
        folder whose subfolders are stores. Raises ``FileNotFoundError`` naming a folder that is
        neither."""
        if dirs is None:
            return cls([])
        items = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
        roots: list[tuple[str, Path]] = []
        for item in items:
            base = Path(item)
            root = FeatureStore.find_root(base)
            if root is not None:
                roots.append((_label(base), root))
                continue
            subs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
            found = [(p.name, r) for p in subs if (r := FeatureStore.find_root(p)) is not None]
            if not found:
                raise FileNotFoundError(
                    f"no dashboard store in {base}: expected index.json.gz there, in "
                    f"{base / 'features'}, or in its subfolders; build one with "
                    "`circuitlab features build` (see docs/features.md)"
                )
            roots += found
        keys: set[str] = set()
        stores = []
        for label, root in roots:
            key = _unique(_slug(label), keys)
            stores.append(DashboardStore.read(key, root))
        return cls(stores)

    def __len__(self) -> int:
        return len(self.stores)

    def public(self) -> list[dict[str, Any]]:
        return [s.public() for s in self.stores]

    def match(self, metadata: dict[str, Any]) -> StoreMatch:
        """The store for the graph whose file metadata is ``metadata`` (module docstring)."""
        g = GraphSet.of(metadata)
        if not self.stores:
            return StoreMatch(None, None, "This server has no dashboards (--features_dir).")
        if g.fingerprint:
            for s in self.stores:
                if s.fingerprint == g.fingerprint:
                    return StoreMatch(s, "fingerprint", "")
        for s in self.stores:
            if g.name and s.name == g.name and not (g.fingerprint and s.fingerprint):
                return StoreMatch(s, "name", _name_note(s, g))
        if not g.fingerprint and len(self.stores) == 1:
            s = self.stores[0]
            return StoreMatch(s, "unknown", _unknown_note(s, g))
        return StoreMatch(None, None, self._none_note(g))

    def _none_note(self, g: GraphSet) -> str:
        sets = "; ".join(f"{s.key}: {_describe(s)}" for s in self.stores)
        if g.fingerprint:
            return (
                f"{NO_DASHBOARD} ({g.describe()}, {g.fingerprint}). This server's dashboard "
                f"stores are of other sets ({sets}). Build this set's dashboards with "
                "`circuitlab features build` and add them with --features_dir."
            )
        return (
            f"{NO_DASHBOARD}: this graph does not record its transcoder set (older circuitlab, "
            f"or another tool) and the server has several dashboard stores ({sets}), so none "
            "is shown rather than a guess."
        )


def _name_note(s: DashboardStore, g: GraphSet) -> str:
    side = "graph" if s.fingerprint else "dashboard store"
    return (
        f"Matched by the transcoder set's name only ({_short(s.name or '')}): this {side} was made before "
        "circuitlab recorded transcoder-set fingerprints."
    )


def _unknown_note(s: DashboardStore, g: GraphSet) -> str:
    if not s.fingerprint:
        return (
            f"{UNKNOWN_STORE}, and this graph does not record its set either: these dashboards "
            "may describe other features. Rebuild the store with `circuitlab features build` "
            "and retrace the graph to be sure."
        )
    return (
        f"This graph does not record its transcoder set; the dashboards are those of "
        f"{_short(s.model or s.name or s.key)} and may describe other features."
    )


def _describe(s: DashboardStore) -> str:
    if not s.fingerprint:
        return "unknown set (built before circuitlab recorded it)"
    return " / ".join(_short(x) for x in (s.model, s.name) if x) or s.fingerprint


def _short(name: str) -> str:
    """A set or model name as shown: a local path's last two parts (hub ids stay whole)."""
    if name and (name.startswith(("/", "~", ".")) or "\\" in name or name[1:3] == ":\\"):
        return "/".join(Path(name.replace("\\", "/")).parts[-2:]) or name
    return name


def _str(v: Any) -> str | None:
    return str(v) if isinstance(v, (str, int)) and str(v) else None


def _label(base: Path) -> str:
    base = base.resolve()
    return base.parent.name if base.name == "features" and base.parent.name else base.name


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:64] or "store"


def _unique(key: str, seen: set[str]) -> str:
    out, i = key, 2
    while out in seen:
        out, i = f"{key}-{i}", i + 1
    seen.add(out)
    return out
