"""Thresholds calibrated on control text against a hand computation, refusals of bad input, and
concurrent use from real threads."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from monitor_helpers import PROMPT, SITE1, parts, tiny_monitor

from features.feature_helpers import tiny_model
from probes.probe_helpers import control_words
from rama.errors import ConfigError, InputError, RamaError
from rama.monitor import LatentWatcher, Monitor, MonitorBusyError, MonitorConfig, calibrate, token_threshold
from rama.monitor.watchers import ProbeWatcher
from rama.probes import ProbeMismatchError
from rama.sae.base import LatentRangeError


def test_token_threshold_by_hand() -> None:
    scores = torch.arange(200) / 200  # 1 % of 200: two may lie above, so the third largest
    assert token_threshold(scores, 0.01) == pytest.approx(0.985)
    assert token_threshold(torch.tensor([0.5, 0.2, 0.9]), 0.01) == pytest.approx(0.9)  # none may lie above
    assert token_threshold(torch.tensor([3.0, 1.0, 2.0, 0.0]), 0.5) == 1.0  # two of four above 1
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        token_threshold(scores, 1.5)


def test_calibration_against_a_hand_computation() -> None:
    model, _, _, sae = parts()
    monitor = tiny_monitor(MonitorConfig(window=2, aggregate="mean"), latent_threshold=None)
    with pytest.raises(ConfigError, match="latent 3 have no threshold"):
        monitor.generate(PROMPT, 2)
    texts = control_words(12)
    calibrated = calibrate(monitor, texts, fpr=0.05)
    by_hand = []  # latent 3 on every control token but the first, mean over a window of two
    for text in texts:
        _, cache = model.run_with_cache(text, [SITE1])
        with torch.no_grad():
            acts = sae.encode(cache[SITE1][0])[:, 3]  # [pos]
        means = torch.stack([acts[max(0, p - 1) : p + 1].mean() for p in range(len(acts))])
        by_hand.append(means[1:])
    scores = torch.cat(by_hand).sort(descending=True).values
    assert calibrated.watchers[2].threshold == pytest.approx(float(scores[int(0.05 * len(scores))]), abs=1e-6)
    assert [w.threshold for w in calibrated.watchers[:2]] == [w.threshold for w in monitor.watchers[:2]]
    everything = calibrate(calibrated, texts, fpr=0.05, which="all")
    assert everything.watchers[0].threshold != calibrated.watchers[0].threshold
    calibrated.generate(PROMPT, 2)  # now it runs


def test_bad_input_is_refused() -> None:
    model, logistic, _, sae = parts()
    other = tiny_model()
    with torch.no_grad():
        other.hf.model.embed_tokens.weight[5] += 1.0
    with pytest.raises(ProbeMismatchError, match="fingerprint"):
        Monitor(other, [ProbeWatcher("p", logistic, 0.5)])
    wide = replace(logistic, meta={**logistic.meta, "width": 64})
    with pytest.raises(ProbeMismatchError, match="64-wide"):
        Monitor(model, [ProbeWatcher("p", wide, 0.5)])
    with pytest.raises(LatentRangeError, match="outside this SAE's 24 latents"):
        LatentWatcher("latent", sae, 24, 1.0)
    with pytest.raises(ConfigError, match="at least 1"):
        MonitorConfig(window=0)
    with pytest.raises(ConfigError, match="not one of max, mean"):
        MonitorConfig(aggregate="median")
    for threshold in (1.5, -0.1):
        with pytest.raises(ConfigError, match=r"outside \[0, 1\]"):
            ProbeWatcher("p", logistic, threshold)
    with pytest.raises(ConfigError, match="unique"):
        Monitor(model, [ProbeWatcher("p", logistic, 0.5), LatentWatcher("p", sae, 1, 1.0)])
    monitor = tiny_monitor()
    with pytest.raises(InputError, match="one sequence at a time"), monitor.watch():
        model(["w5 w6", "w7 w8"])


def test_concurrent_requests_score_as_alone() -> None:
    monitor = tiny_monitor(MonitorConfig(window=2))
    prompts = ["w40 w41 w42 w10", "w50 w20", "w60 w61 w62 w63 w64 w20", "w33"]
    alone = [monitor.generate(p, 8) for p in prompts]
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(prompts) * 2)

    def request(index: int) -> None:
        barrier.wait()
        results[index] = monitor.generate(prompts[index % len(prompts)], 8)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(prompts) * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, result in results.items():
        expected = alone[index % len(prompts)]
        assert result.ids == expected.ids  # type: ignore[attr-defined]
        assert torch.equal(result.raw, expected.raw)  # type: ignore[attr-defined]
        assert [e.position for e in result.events] == [e.position for e in expected.events]  # type: ignore[attr-defined]
    assert len(results) == len(prompts) * 2


def test_reentry_from_a_callback_is_refused() -> None:
    monitor = tiny_monitor()

    def again(token: object) -> None:
        monitor.generate(PROMPT, 1)

    with pytest.raises(MonitorBusyError, match="already running"):
        monitor.generate(PROMPT, 2, on_token=again)
    assert isinstance(MonitorBusyError("x"), RamaError)
    monitor.generate(PROMPT, 1)  # usable again afterwards
