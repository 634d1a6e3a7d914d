"""The monitor's scores equal an offline computation on cached activations, come from the generation's
own forward passes, aggregate over a window as computed by hand, and leave as JSON-line events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monitor_helpers import PROMPT, SITE0, SITE1, parts, tiny_monitor

from rama.monitor import JsonLinesFile, MonitorConfig, read_events, score_offline, window_scores


def offline_scores(ids: list[int]) -> torch.Tensor:
    """`[pos, 4]` the watchers' scores from one uncached forward over the whole sequence, through the
    probes' own read-out and the SAE's encode."""
    model, logistic, diffmean, sae = parts()
    _, cache = model.run_with_cache(torch.tensor([ids]), [SITE0, SITE1])
    x0, x1 = cache[SITE0][0], cache[SITE1][0]  # [pos, d]
    codes = sae.encode(x1)
    return torch.stack([1 - logistic.probe.probabilities(x1).float(), 1 - diffmean.probe.probabilities(x0).float(),
                        codes[:, 3], codes[:, 7]], dim=1)  # fmt: skip


def test_generation_scores_equal_offline_scores() -> None:
    monitor = tiny_monitor()
    result = monitor.generate(PROMPT, max_new_tokens=6)
    assert result.prompt_length == 4 and len(result.ids) == 10  # every generated token, the last included
    assert torch.allclose(result.raw, offline_scores(result.ids), atol=1e-5)
    model = parts()[0]
    plain = model.generate(PROMPT, 6)
    assert result.text == plain  # watching changes nothing
    _, cache = model.run_with_cache(torch.tensor([result.ids]), [SITE0, SITE1])
    assert torch.allclose(
        score_offline(monitor, {s: cache[s][0] for s in (SITE0, SITE1)}), result.raw, atol=1e-5
    )
    forward = monitor.forward(plain)  # a plain forward pass scores every token too
    assert torch.allclose(forward.raw, result.raw, atol=1e-5)


def test_no_second_forward_pass() -> None:
    monitor = tiny_monitor()
    model = monitor.model
    calls: list[int] = []
    handle = model.hf.register_forward_hook(lambda module, args, output: calls.append(1))
    layer = model.hf.model.layers[0]
    layer_calls: list[int] = []
    layer_handle = layer.register_forward_hook(lambda module, args, output: layer_calls.append(1))
    try:
        model.generate(PROMPT, 5)
        plain, plain_layer = len(calls), len(layer_calls)
        calls.clear(), layer_calls.clear()
        monitor.generate(PROMPT, 5, score_last=False)
        assert (len(calls), len(layer_calls)) == (plain, plain_layer) == (5, 5)  # prompt + 4 fed-back tokens
        calls.clear()
        monitor.generate(PROMPT, 5)
        assert len(calls) == 6  # one more one-token step scores the last generated token
    finally:
        handle.remove(), layer_handle.remove()


def test_window_aggregation_by_hand() -> None:
    scores = torch.tensor([[1.0, 0.0], [3.0, 1.0], [2.0, 0.0], [0.0, 5.0]])
    assert window_scores(scores, 2, "max").tolist() == [[1, 0], [3, 1], [3, 1], [2, 5]]
    assert window_scores(scores, 2, "mean").tolist() == [[1, 0], [2, 0.5], [2.5, 0.5], [1, 2.5]]
    assert window_scores(scores, 3, "mean", start=2).flatten().tolist() == pytest.approx([2, 1 / 3, 5 / 3, 2])
    assert window_scores(scores, 1, "max").tolist() == scores.tolist()
    result = tiny_monitor(MonitorConfig(window=3, aggregate="mean")).generate(PROMPT, max_new_tokens=4)
    raw = result.raw
    for p in range(len(raw)):
        assert torch.allclose(result.scores[p], raw[max(0, p - 2) : p + 1].mean(0), atol=1e-6)


def test_events_as_json_lines(tmp_path: Path) -> None:
    monitor = tiny_monitor(MonitorConfig(window=2, aggregate="max"))
    model = monitor.model
    seen: list[object] = []
    with JsonLinesFile(tmp_path / "events.jsonl") as sink:
        result = monitor.generate(PROMPT, max_new_tokens=6, sink=sink, on_token=seen.append)
    events = read_events(tmp_path / "events.jsonl")
    assert len(seen) == len(result.ids)
    # latent 7 has threshold 0: flagged wherever it fires on a generated token; prompt tokens never flag
    expected = [(p, c) for p in range(4, len(result.ids)) for c in range(4)
                if result.scores[p, c] > result.thresholds[c]]  # fmt: skip
    assert [(e["position"], result.watchers.index(e["watcher"])) for e in events] == expected and expected
    for event in events:
        assert set(event) == {"position", "generated", "token", "text", "watcher", "kind", "score", "raw",
                              "threshold", "aggregate", "window"}  # fmt: skip
        p, c = event["position"], result.watchers.index(event["watcher"])
        assert event["generated"] == p - 4 and event["token"] == model.tokenizer.decode([result.ids[p]])
        assert event["text"] == model.tokenizer.decode(result.ids[: p + 1])
        assert (
            event["score"] == pytest.approx(float(result.scores[p, c]))
            and event["score"] > event["threshold"]
        )
        assert event["raw"] == pytest.approx(float(result.raw[p, c]))
        assert event["kind"] == ("probe" if c < 2 else "latent") and (
            event["aggregate"],
            event["window"],
        ) == ("max", 2)
    assert json.loads(result.events[0].to_json()) == events[0]
    marked = result.marked_text()
    assert marked.count("[[") == len({e["position"] for e in events})
    rows = {row["watcher"]: row for row in result.summary()}
    assert rows["latent 7"]["events"] == sum(e["watcher"] == "latent 7" for e in events)
    assert rows["logistic"]["max_score"] == pytest.approx(float(result.scores[4:, 0].max()))
