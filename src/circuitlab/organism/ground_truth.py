"""The organism's ground truth: what a prompt's intermediate state and answer are, and which
transcoder features represent each state.

A feature is a **state feature** of state ``S`` at a site (the city token, or the last token of
the two-hop question) when, over the two-hop questions about every city of the world (held out
or not), it fires on at least ``min_recall`` of ``S``'s cities and its mean activation over
``S``'s cities is at least ``min_ratio`` times its mean over the other states' cities. The
organism's model encodes states with a distributed code (a city's features are shared with a
few other states), so this is "over-represented in S", not "fires only for S". Nothing here
reads an attribution graph, so tests can check that attribution finds these features
independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .facts import DALLAS_PROMPT, STATE_OF, STATES, two_hop_prompt

if TYPE_CHECKING:
    from ..replacement import ReplacementModel


@dataclass(frozen=True)
class Truth:
    """The intermediate state and the answer of a two-hop question about ``city``."""

    city: str
    state: str
    answer: str


def truth(city: str) -> Truth:
    """Ground truth for the two-hop question about ``city`` (e.g. Dallas → Texas → Austin)."""
    s = STATE_OF[city]
    return Truth(city, s.name, s.capital)


def truth_for_prompt(prompt: str) -> Truth:
    """Ground truth for a two-hop prompt of ``facts.two_hop_prompt`` form (English or French)."""
    for city in STATE_OF:
        if prompt in (two_hop_prompt(city, "en"), two_hop_prompt(city, "fr")):
            return truth(city)
    raise ValueError(f"{prompt!r} is not a two-hop question of the organism's world.")


DALLAS = truth_for_prompt(DALLAS_PROMPT)


@dataclass(frozen=True)
class StateFeature:
    """A (layer, feature) that separates one state's cities from the others' at ``site``."""

    state: str
    layer: int
    feature: int
    site: str  # "city" (the city token) or "last" (the final token)
    recall: float  # share of the state's cities it fires on
    ratio: float  # mean activation over the state's cities / over the other states' cities
    mean_activation: float  # over the state's cities


@torch.no_grad()
def site_activations(model: ReplacementModel, language: str = "en") -> dict[str, torch.Tensor]:
    """Activations ``acts[site][city, layer, feature]`` at the city token and the last token of
    the two-hop question about each city (cities in ``STATE_OF`` order)."""
    city_rows, last_rows = [], []
    for city in STATE_OF:
        prompt = two_hop_prompt(city, language)
        acts = model.get_activations(prompt).dense()  # [layer, pos, feature]
        ids = model.tokenizer(prompt, add_special_tokens=False).input_ids  # type: ignore[misc]
        pos = 1 + ids.index(model.tokenizer.convert_tokens_to_ids(city))  # type: ignore[union-attr]
        city_rows.append(acts[:, pos])
        last_rows.append(acts[:, -1])
    return {"city": torch.stack(city_rows), "last": torch.stack(last_rows)}


def state_features(
    model: ReplacementModel,
    *,
    min_recall: float = 0.75,
    min_ratio: float = 2.0,
    language: str = "en",
) -> list[StateFeature]:
    """Every state feature of every state (module docstring), strongest first per state."""
    acts = site_activations(model, language)
    cities = list(STATE_OF)
    out: list[StateFeature] = []
    for s in STATES:
        mine = torch.tensor([STATE_OF[c].name == s.name for c in cities])
        for site, a in acts.items():  # a[city, layer, feature]
            recall = (a[mine] > 0).float().mean(0)  # [layer, feature]
            mean, other = a[mine].mean(0), a[~mine].mean(0)
            ratio = mean / other.clamp_min(1e-6)
            ok = (recall >= min_recall) & (ratio >= min_ratio)
            found = [
                StateFeature(
                    s.name,
                    layer,
                    f,
                    site,
                    recall[layer, f].item(),
                    min(ratio[layer, f].item(), 1e3),
                    mean[layer, f].item(),
                )
                for layer, f in ok.nonzero().tolist()
            ]
            out += sorted(found, key=lambda x: -x.mean_activation)
    return out
