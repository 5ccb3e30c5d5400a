"""``load_transcoders(ref)``: one entry point for every place transcoders come from.

``ref`` may be a local directory (circuit-tracer ``config.yaml`` or SAELens layout), a path to a
``config.yaml``, a Hugging Face hub reference (``owner/repo``, ``owner/repo/sub/folder``,
``owner/repo@revision``, ``hf://owner/repo/sub?revision=rev``) or a shortcut (``gemma``,
``llama``). Hub references download ``config.yaml`` first and then only the files it needs.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .base import Transcoders
from .formats.circuit_tracer import (
    CONFIG_NAME,
    CROSS_LAYER,
    load_circuit_tracer,
    parse_hf_uri,
    read_config,
)
from .formats.saelens import is_saelens_dir, load_saelens

#: Short names for the transcoder repositories circuit-tracer uses.
SHORTCUTS = {
    "gemma": "mwhanna/gemma-scope-transcoders",
    "llama": "mntss/transcoder-Llama-3.2-1B",
}

_NAME = r"[A-Za-z0-9][\w.-]*"
_HUB_ID = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?P<sub>(?:/[\w.-]+)*)/?(?:@(?P<rev>[\w./-]+))?")


@dataclass(frozen=True)
class HubRef:
    """A transcoder directory (or config file) in a hub repository."""

    repo_id: str
    subfolder: str = ""
    revision: str | None = None
    config_name: str = CONFIG_NAME

    @property
    def name(self) -> str:
        """circuit-tracer's "scan" identity: ``owner/repo[//sub][@rev]``."""
        sub = f"//{self.subfolder}" if self.subfolder else ""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.repo_id}{sub}{rev}"

    @property
    def config_path(self) -> str:
        """Path of the config inside the repository."""
        return (
            posixpath.join(self.subfolder, self.config_name) if self.subfolder else self.config_name
        )


def parse_hub_ref(ref: str) -> HubRef:
    """Parses a shortcut, ``owner/repo[/sub][@rev]`` or ``hf://owner/repo[/sub][?revision=rev]``."""
    ref = SHORTCUTS.get(ref, ref)
    if ref.startswith("hf://"):
        uri = parse_hf_uri(ref)
        repo_id, sub, rev = uri.repo_id, uri.path, uri.revision
    else:
        m = _HUB_ID.fullmatch(ref)
        if m is None:
            raise ValueError(
                f"{ref!r} is neither an existing path nor a hub id. Pass a local directory or "
                "config.yaml, `owner/repo[/sub/folder][@revision]`, `hf://owner/repo/sub`, or one "
                f"of the shortcuts {sorted(SHORTCUTS)}."
            )
        repo_id, sub, rev = m["repo"], m["sub"], m["rev"]
    sub = sub.strip("/")
    config_name = CONFIG_NAME
    if sub.endswith((".yaml", ".yml")):
        sub, config_name = posixpath.split(sub)
    return HubRef(repo_id, sub, rev, config_name)


def load_transcoders(
    ref: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    lazy_encoder: bool = False,
    lazy_decoder: bool = True,
    cache_dir: str | None = None,
) -> Transcoders:
    """Loads transcoders from a local path, a hub reference or a shortcut (see module docs).

    ``cache_dir`` is the Hugging Face cache (default: huggingface_hub's). The result's ``name``
    is the absolute directory for local files and ``owner/repo[//sub][@rev]`` for hub ones.
    """
    opts: dict[str, Any] = {
        "dtype": dtype,
        "device": device,
        "lazy_encoder": lazy_encoder,
        "lazy_decoder": lazy_decoder,
    }
    local = _local_path(ref)
    if local is not None:
        return _load_local(local, opts)
    hub = parse_hub_ref(str(ref))
    config_path = download_hub_ref(hub, cache_dir=cache_dir)
    return load_circuit_tracer(config_path, name=hub.name, cache_dir=cache_dir, **opts)


def _local_path(ref: str | Path) -> Path | None:
    """The local path ``ref`` names, or None when it should be read as a hub reference."""
    path = Path(ref).expanduser()
    if path.exists():
        return path
    text = str(ref)
    if isinstance(ref, Path) or text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text:
        raise FileNotFoundError(
            f"{text} does not exist; pass an existing directory or config.yaml."
        )
    return None


def _load_local(path: Path, opts: dict[str, Any]) -> Transcoders:
    if path.is_file():
        if path.suffix in (".yaml", ".yml"):
            return load_circuit_tracer(path, **opts)
        raise ValueError(
            f"{path} is a file; pass its directory, or a config.yaml that lists it under "
            "`transcoders:`."
        )
    if (path / CONFIG_NAME).is_file():
        return load_circuit_tracer(path, **opts)
    if is_saelens_dir(path):
        return load_saelens(path, **opts)
    raise FileNotFoundError(
        f"No {CONFIG_NAME} in {path.resolve()} (and no SAELens cfg.json). Add a {CONFIG_NAME} "
        "with `model_kind: transcoder_set` (or cross_layer_transcoder), `feature_input_hook` and "
        "`feature_output_hook` next to the layer_{i}.safetensors files."
    )


def download_hub_ref(hub: HubRef, *, cache_dir: str | None = None) -> Path:
    """Downloads ``config.yaml`` and then only the files it needs; returns the local config."""
    root = _snapshot(hub, [hub.config_path], cache_dir)
    config_path = root / hub.config_path
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{hub.name} has no {hub.config_path}; check the repository and sub-folder, or "
            "download the files and pass a local directory."
        )
    config, _ = read_config(config_path)
    patterns = files_needed(config, hub.subfolder)
    if patterns:
        _snapshot(hub, patterns, cache_dir)
    return config_path


def files_needed(config: dict[str, Any], subfolder: str = "") -> list[str]:
    """``allow_patterns`` for the weight files a config needs from its own repository.

    ``hf://`` entries are fetched one by one when the config is read; absolute paths are local.
    """

    def inside(p: str) -> str:
        return (
            posixpath.normpath(posixpath.join(subfolder, p)) if subfolder else posixpath.normpath(p)
        )

    listed = config.get("transcoders")
    if listed is not None:
        return [
            inside(str(e))
            for e in listed
            if not str(e).startswith("hf://") and not Path(str(e)).is_absolute()
        ]
    if config.get("model_kind") == CROSS_LAYER:
        return [
            inside(p) for p in ("W_enc_*.safetensors", "W_dec_*.safetensors", "W_skip.safetensors")
        ]
    return [inside("layer_*.safetensors")]


def _snapshot(hub: HubRef, patterns: list[str], cache_dir: str | None) -> Path:
    from huggingface_hub import snapshot_download

    from ..models.hub import HubUnreachableError, hub_fetch

    try:
        folder = hub_fetch(
            "transcoders",
            hub.name,
            snapshot_download,
            hub.repo_id,
            revision=hub.revision,
            allow_patterns=patterns,
            cache_dir=cache_dir,
        )
    except HubUnreachableError:
        raise
    except Exception as err:  # network, offline mode, missing repo or revision
        raise OSError(
            f"Could not fetch {patterns} of {hub.name} from the Hugging Face hub: {err}. Check the "
            "repo id and revision and your network (or HF_HUB_OFFLINE with a filled cache), or "
            "pass a local directory."
        ) from err
    return Path(folder)
