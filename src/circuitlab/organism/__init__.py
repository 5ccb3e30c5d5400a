"""A tiny model organism that contains the two-hop circuit of the paper's flagship example.

"Fact: the capital of the state containing Dallas is" → Austin, through a Texas representation
at the "Dallas" token. A 4-layer Llama trained by ``recipe`` on generated facts text
(``facts``, ``corpus``), with per-layer transcoders and dashboards shipped in ``weights/``.
See docs/organism.md.

    from circuitlab.organism import load_organism, organism_paths, state_features
    model = load_organism()                       # ReplacementModel, shipped weights
    truth("Dallas")                               # Truth(city='Dallas', state='Texas', answer='Austin')
"""

from __future__ import annotations

from .facts import DALLAS_PROMPT, FRENCH_DALLAS_PROMPT, STATES, TWO_HOP_TRAIN, questions
from .ground_truth import (
    DALLAS,
    StateFeature,
    Truth,
    state_features,
    truth,
    truth_for_prompt,
)
from .load import OrganismPaths, load_organism, organism_paths
from .swap import state_swap

__all__ = [
    "DALLAS",
    "DALLAS_PROMPT",
    "FRENCH_DALLAS_PROMPT",
    "STATES",
    "TWO_HOP_TRAIN",
    "OrganismPaths",
    "StateFeature",
    "Truth",
    "load_organism",
    "organism_paths",
    "questions",
    "shipped_state_features",
    "state_features",
    "state_swap",
    "truth",
    "truth_for_prompt",
]


def shipped_state_features(paths: OrganismPaths | None = None) -> list[StateFeature]:
    """The state features recorded in ``organism.json`` when the organism was built."""
    paths = paths or organism_paths()
    return [StateFeature(**f) for f in paths.info["state_features"]]
