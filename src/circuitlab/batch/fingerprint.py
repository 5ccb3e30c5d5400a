"""Content fingerprints of the transcoders and model a batch loads.

A prompt's key (``tracing.record_key``) must change when anything that shapes its graph
changes. Paths are not enough: new transcoder weights written to the same folder would keep
the old graphs (a graph scoring 0.793 was kept where the true score was 0.440). So the key
holds ``load_fingerprint(spec)``:

* a local file: the SHA-256 of its bytes, read in 1 MiB chunks; a local folder: the SHA-256 of
  its files' relative names and digests (names starting with ``.``, such as temporary files and
  caches, are skipped);
* transcoders: their folder (or a ``config.yaml``'s folder), plus every local file a
  ``transcoders:`` list names outside it; ``hf://`` entries and hub references are keyed by the
  reference as written, revision included (pin ``@revision`` for keys that cannot go stale);
* the model: ``LoadSpec.model``, else the transcoders' ``model_name`` resolved as the loader
  resolves it (relative to ``config.yaml``); a packaged name (``smollm2``) by its cached
  folder, a ``.gguf`` by its file, a hub id by the id.

A file's digest is cached per process by (path, size, mtime, inode): a run reads each file once
(about a second for a 135M-parameter model in float32).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tracing import LoadSpec

_CHUNK = 1 << 20
_FILES: dict[tuple[str, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (cached while the file's size, mtime and inode stay)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _FILES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _FILES[key] = h.hexdigest()
    return _FILES[key]


def path_digest(path: Path) -> str:
    """``file_digest`` of a file; for a folder, a digest of its non-hidden files' names and
    digests, in sorted order (so the same files anywhere give the same digest)."""
    if path.is_file():
        return file_digest(path)
    h = hashlib.sha256()
    for name, file in sorted(_files(path)):
        h.update(f"{name}\0{file_digest(file)}\n".encode())
    return h.hexdigest()


def _files(root: Path) -> list[tuple[str, Path]]:
    out = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                file = Path(folder) / name
                out.append((file.relative_to(root).as_posix(), file))
    return out


def load_fingerprint(load: LoadSpec) -> dict[str, Any]:
    """``{"transcoders": ..., "model": ...}``: content digests of local inputs, references
    as written for hub ones (see the module docstring)."""
    local = Path(load.transcoder_set).expanduser()
    if not local.exists():
        return {"transcoders": f"hub:{load.transcoder_set}", "model": _model_digest(load.model)}
    folder = local.parent if local.is_file() else local
    digest: dict[str, Any] = {"folder": path_digest(folder)}
    config = _config(local)
    if config is not None:
        digest["outside"] = _outside_files(config, folder)
    model = load.model if load.model is not None else _model_name(local, config)
    return {"transcoders": digest, "model": _model_digest(model)}


def _config(local: Path) -> dict[str, Any] | None:
    from ..transcoders.formats.circuit_tracer import CONFIG_NAME, read_config

    if local.is_dir() and not (local / CONFIG_NAME).is_file():
        return None
    config, _ = read_config(local)
    return config


def _outside_files(config: dict[str, Any], folder: Path) -> list[str]:
    """Digests (or ``hf://`` references) of ``transcoders:`` entries outside ``folder``."""
    out = []
    for entry in config.get("transcoders") or []:
        entry = str(entry)
        if entry.startswith("hf://"):
            out.append(entry)
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else folder / path
        if not path.resolve().is_relative_to(folder.resolve()) and path.is_file():
            out.append(file_digest(path))
    return out


def _model_name(local: Path, config: dict[str, Any] | None) -> str | None:
    """The transcoders' ``model_name`` as ``load_transcoders`` resolves it."""
    from ..transcoders.formats import circuit_tracer
    from ..transcoders.formats.saelens import read_saelens_cfg, saelens_layer_dirs

    if config is not None:
        folder = local.parent if local.is_file() else local
        return circuit_tracer._model_name(config.get("model_name"), folder)  # pyright: ignore[reportPrivateUsage]
    dirs = saelens_layer_dirs(local)
    return read_saelens_cfg(dirs[0]).model_name if dirs else None


def _model_digest(ref: str | None) -> str | None:
    from ..models.hub import resolve_model_ref

    if ref is None:
        return None
    path = Path(resolve_model_ref(ref)).expanduser()
    if path.exists():
        return path_digest(path)
    return f"hub:{ref}"
