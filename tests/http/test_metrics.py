"""`GET /metrics` behind its own key when BRIDGE_METRICS_KEY is set (bridge/http/metrics.py)."""

from __future__ import annotations

import httpx2

from tests.procs import Proc, bridge_env, running, start_bridge


def test_metrics_can_be_put_behind_their_own_key(simulator: Proc) -> None:
    with running(start_bridge(bridge_env(simulator, BRIDGE_METRICS_KEY="scrape-me-please"))) as bridge:
        anonymous = httpx2.get(f"{bridge.url}/metrics", timeout=10)
        wrong = httpx2.get(f"{bridge.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
        scraper = httpx2.get(
            f"{bridge.url}/metrics", headers={"Authorization": "Bearer scrape-me-please"}, timeout=10
        )
        health = httpx2.get(f"{bridge.url}/healthz", timeout=10)
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.content == wrong.content
    assert scraper.status_code == 200 and "bridge_uploads_total" in scraper.text
    assert health.status_code == 200
