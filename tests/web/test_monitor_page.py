"""/monitor through a real uvicorn server: the scores the page shows equal the monitor's own run, the
page streams token by token, markup in tokens stays text, and the dashboard's safety rules hold
(local Host only, cross-origin POST refused, length limits)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from web_helpers import MARKUP, SITE, elements, served, shared_store

from probes.probe_helpers import word_statements
from rama.monitor import LatentWatcher, Monitor, MonitorConfig, probe_watcher
from rama.probes import ProbeConfig, ProbeDataset, train_probe

PROMPT = f"v40 v41 {MARKUP[3]} v10"


def markup_statements(groups: int = 30) -> ProbeDataset:
    """probe_helpers' word statements in this tokenizer's words: v10 true, v20 false, after a random prefix."""
    words = word_statements(groups)
    return ProbeDataset("markup", tuple(t.replace("w", "v") for t in words.texts), words.labels, words.groups)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Monitor]]:
    db, model, sae = shared_store(tmp_path_factory)
    control = [" ".join(f"v{i}" for i in range(start, start + 5)) for start in range(30, 70)]
    config = ProbeConfig(kind="diffmean", progress=False, control=40)
    trained = train_probe(model, markup_statements(), SITE, control, config)
    watchers = [probe_watcher(trained, "v-probe", 0.3), LatentWatcher("latent 5", sae, 5, 0.0)]
    monitor = Monitor(model, watchers, MonitorConfig(window=2))
    with served(db, model, sae, monitor=monitor) as url:
        yield url, monitor


def test_page_scores_equal_the_monitors_run(live: tuple[str, Monitor]) -> None:
    url, monitor = live
    expected = monitor.generate(PROMPT, 6)
    html = httpx.get(f"{url}/monitor", params={"prompt": PROMPT, "new_tokens": "6"}, timeout=30).text
    cards = elements(html, "span", "mtok")
    assert [int(c["data-position"]) for c in cards] == list(range(len(expected.ids)))
    for card, scores, flags in zip(cards, expected.scores.tolist(), expected.flagged().tolist(), strict=True):
        assert [float(s) for s in card["data-scores"].split(",")] == pytest.approx(scores, abs=1e-5)
        assert card["data-flagged"] == ",".join(str(int(f)) for f in flags)
        assert ("flagged" in card["class"].split()) == any(flags)
    assert [c["text"] for c in cards] == expected.tokens and expected.tokens[2] == MARKUP[3]
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert sum("prompt" in c["class"].split() for c in cards) == 4
    summary = {
        r["data-watcher"]: r
        for r in elements(html.replace("<tr data-watcher", '<tr class="srow" data-watcher'), "tr", "srow")
    }
    for row in expected.summary():
        assert f"{row['events']}" in summary[row["watcher"]]["text"]


def test_page_streams_token_by_token(live: tuple[str, Monitor]) -> None:
    url, _ = live
    chunks: list[str] = []
    with httpx.stream(
        "POST", f"{url}/monitor", data={"prompt": PROMPT, "new_tokens": "8"}, timeout=30
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        chunks = list(response.iter_text())
    html = "".join(chunks)
    assert len(elements(html, "span", "mtok")) == 12
    first_card = next(i for i, c in enumerate(chunks) if 'class="mtok' in c)
    assert first_card < len(chunks) - 1 and any("<form" in c for c in chunks[: first_card + 1])  # form first
    assert len([c for c in chunks if 'class="mtok' in c]) >= 2  # cards arrive in more than one piece


def test_safety_rules(live: tuple[str, Monitor]) -> None:
    url, _ = live
    evil = httpx.post(f"{url}/monitor", data={"prompt": PROMPT}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "may not change this dashboard" in evil.text
    rebound = httpx.get(f"{url}/monitor", params={"prompt": PROMPT}, headers={"Host": "evil.example"})
    assert rebound.status_code == 400
    long = httpx.get(f"{url}/monitor", params={"prompt": "v40 " * 300})
    assert long.status_code == 400 and "the limit is 1,000" in long.text
    many = httpx.post(f"{url}/monitor", data={"prompt": PROMPT, "new_tokens": "65"})
    assert many.status_code == 400 and "between 1 and 64" in many.text
    bad = httpx.get(f"{url}/monitor", params={"prompt": PROMPT, "new_tokens": "6; drop"})
    assert bad.status_code == 400 and "whole number" in bad.text
    form = httpx.get(f"{url}/monitor").text
    assert "v-probe" in form and 'action="/monitor"' in form and "disabled" not in form


def test_without_probes_the_page_says_how(tmp_path_factory: pytest.TempPathFactory) -> None:
    db, model, sae = shared_store(tmp_path_factory)
    with served(db, model, sae) as url:
        page = httpx.get(f"{url}/monitor", params={"prompt": PROMPT})
    assert (
        page.status_code == 200 and "rama serve DB --probe PROBE_DIR" in page.text and "mtok" not in page.text
    )
