"""Tracing from the page on a tiny model: prompt -> background job -> the new graph opens."""

from __future__ import annotations

from typing import Any

from circuitlab.server import LabServer

from .conftest import click_node, open_lab


def test_a_prompt_traced_from_the_page_opens_as_a_graph(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?slug=small")
    assert page.is_visible("#trace")
    page.fill("#trace-prompt", "the capital of")
    page.fill("#trace-targets", "France|Texas")
    page.click("#trace-go")
    page.wait_for_selector("#jobs .job")  # the queue is visible
    page.wait_for_function("window.__lab.state.slug.startsWith('trace-')", timeout=60_000)
    page.wait_for_selector("#jobs .job-done")
    g = page.evaluate(
        """() => { const g = window.__lab.state.graph; return {
            prompt: g.meta.prompt, logits: g.nodes.filter(n => n.kind === 'logit').map(n => n.clerp) }; }"""
    )
    assert g["prompt"].endswith("the capital of")
    assert [c.split('"')[1] for c in g["logits"]] == ["France", "Texas"]
    assert "slug=trace-" in page.url
    options = page.eval_on_selector_all("#graph-select option", "os => os.map(o => o.value)")
    assert any(o.startswith("trace-") for o in options)


def test_steering_pinned_nodes_from_the_page(page: Any, tracing_lab: LabServer) -> None:
    open_lab(page, tracing_lab.url + "?slug=small")
    page.fill("#trace-prompt", "the capital of")
    page.click("#trace-go")
    page.wait_for_function("window.__lab.state.slug.startsWith('trace-')", timeout=60_000)
    ids = page.evaluate(
        "() => window.__lab.state.graph.nodes.filter(n => n.kind === 'feature' && window.__lab.screenPos(n.id)).slice(0, 3).map(n => n.id)"
    )
    for node_id in ids:
        click_node(page, node_id, ["Control"])
    assert page.is_visible("#steer")
    page.select_option("#steer-op", "scale")
    page.fill("#steer-amount", "20")
    page.fill("#steer-tokens", "3")
    page.click("#steer-go")
    page.wait_for_selector("#steer-result .steer-col")
    cols = page.locator("#steer-result .steer-col")
    assert cols.count() == 2
    assert cols.nth(0).locator("tr").count() == 8 and cols.nth(1).locator("tr").count() == 8
    assert f"on {len(ids)} nodes" in cols.nth(1).inner_text()


def test_a_job_finished_before_its_post_answers_still_opens(
    page: Any, tracing_lab: LabServer
) -> None:
    """The websocket's "done" can overtake the POST's answer on a fast job; the answer's older
    snapshot (running) must not hide that the job is done."""
    import time

    import httpx

    def late_answer(route: Any) -> None:
        response = route.fetch()
        job = response.json()["job"]
        for _ in range(200):  # hold the answer until the server has finished the job
            jobs = httpx.get(tracing_lab.url.rstrip("/") + "/api/jobs").json()["jobs"]
            if any(j["id"] == job["id"] and j["status"] == "done" for j in jobs):
                break
            time.sleep(0.05)
        time.sleep(0.3)  # and until the websocket has told the page
        route.fulfill(response=response, json={"job": {**job, "status": "running"}})

    open_lab(page, tracing_lab.url + "?slug=small")
    page.route("**/api/trace", late_answer)
    page.fill("#trace-prompt", "the capital of")
    page.click("#trace-go")
    page.wait_for_function("window.__lab.state.slug.startsWith('trace-')", timeout=20_000)
    page.wait_for_selector("#jobs .job-done")
