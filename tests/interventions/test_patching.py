"""Activation, path and attribution patching on the IOI toy, where only S2 differs between the runs:
the answer's information must start at S2, end at END, and cross through the S-inhibition head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rama.errors import ConfigError, InputError
from rama.interventions import (
    Receiver,
    activation_patching,
    agreement,
    attribution_patching,
    path_patch,
    path_patching_senders,
)
from rama.interventions.patching_figures import plot_patching


def test_residual_patching_follows_the_information_from_s2_to_end(ioi_pair, tmp_path: Path) -> None:
    pair = ioi_pair
    result = activation_patching(pair.model, pair.clean, pair.corrupted, pair.metric, sweep="resid_pre")
    assert result.clean > 2.0 and result.corrupted < -2.0
    scores = result.normalised()  # [layer, pos]
    assert scores.shape == (3, pair.clean.shape[1])
    assert float(scores[0, pair.s2]) == pytest.approx(1.0, abs=1e-5)  # the whole difference sits at S2
    others = [p for p in range(scores.shape[1]) if p != pair.s2]
    assert float(scores[0, others].abs().max()) < 1e-6  # identical inputs there: patching does nothing
    final = activation_patching(pair.model, pair.clean, pair.corrupted, pair.metric, sweep="resid_post")
    assert float(final.normalised()[-1, pair.end]) == pytest.approx(1.0, abs=1e-4)  # all of it at END
    assert result.labels["pos"][pair.s2].endswith(
        pair.model.tokenizer.convert_ids_to_tokens(int(pair.clean[0, pair.s2]))
    )
    figure = plot_patching(result, tmp_path / "resid.png")
    assert figure.stat().st_size > 10_000


def test_head_patching_finds_the_s_inhibition_head(ioi_pair) -> None:
    pair = ioi_pair
    result = activation_patching(pair.model, pair.clean, pair.corrupted, pair.metric, sweep="heads")
    scores = result.normalised()
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    assert [layer, head] in pair.truth["heads"]["s_inhibition"]
    assert float(scores.max()) > 0.5
    noising = activation_patching(
        pair.model, pair.clean, pair.corrupted, pair.metric, sweep="heads", direction="noising"
    )
    assert float(noising.normalised()[layer, head]) < 0.5  # it is also necessary


def test_patches_batched_equal_patches_run_one_by_one(ioi_pair) -> None:
    pair = ioi_pair
    batched = activation_patching(
        pair.model, pair.clean, pair.corrupted, pair.metric, sweep="attn_out", max_batch=512
    )
    single = activation_patching(
        pair.model, pair.clean, pair.corrupted, pair.metric, sweep="attn_out", max_batch=1
    )
    torch.testing.assert_close(batched.values, single.values, atol=1e-4, rtol=1e-4)


def test_attribution_patching_agrees_with_activation_patching(ioi_pair) -> None:
    pair = ioi_pair
    estimates = attribution_patching(pair.model, pair.clean, pair.corrupted, pair.metric)
    for sweep in ("resid_pre", "heads"):
        actual = activation_patching(pair.model, pair.clean, pair.corrupted, pair.metric, sweep=sweep)
        assert estimates[sweep].values.shape == actual.values.shape
        assert estimates[sweep].clean == pytest.approx(actual.clean, abs=1e-4)
        assert agreement(estimates[sweep], actual) > 0.6, sweep
    layer0 = estimates["resid_pre"].normalised()[0]
    assert int(layer0.abs().argmax()) == pair.s2  # the estimate points at S2 too


def test_path_patching_through_the_s_inhibition_head(ioi_pair) -> None:
    pair = ioi_pair
    [sender] = [tuple(h) for h in pair.truth["heads"]["s_inhibition"]][:1]
    movers = [
        Receiver(layer, head, "q") for layer, head in pair.truth["heads"]["name_mover"] if layer > sender[0]
    ]
    assert movers
    with torch.no_grad():
        clean = float(pair.metric(pair.model(pair.clean)))
    through_movers = path_patch(pair.model, pair.clean, pair.corrupted, pair.metric, [sender], movers)
    direct = path_patch(pair.model, pair.clean, pair.corrupted, pair.metric, [sender], [Receiver.logits()])
    assert through_movers < clean - 1.0  # the path into the name movers' queries carries the signal
    everything = path_patching_senders(
        pair.model, pair.clean, pair.corrupted, pair.metric, [Receiver.logits()]
    )
    assert everything.values.shape == (3, 4) and float(everything.values[sender]) == pytest.approx(
        direct, abs=1e-4
    )


def test_path_patching_with_nothing_changed_is_the_clean_run(ioi_pair) -> None:
    pair = ioi_pair
    with torch.no_grad():
        clean = float(pair.metric(pair.model(pair.clean)))
    same = path_patch(pair.model, pair.clean, pair.clean, pair.metric, [(0, 1)], [Receiver(2, 0, "k")])
    assert same == pytest.approx(clean, abs=1e-4)


def test_bad_patching_requests_are_clear(ioi_pair) -> None:
    pair = ioi_pair
    with pytest.raises(InputError, match="same shape"):
        activation_patching(pair.model, pair.clean, pair.corrupted[:, :-1], pair.metric)
    with pytest.raises(ConfigError, match="unknown sweep"):
        activation_patching(pair.model, pair.clean, pair.corrupted, pair.metric, sweep="mlp_in")
    with pytest.raises(ConfigError, match="unknown sweep"):
        attribution_patching(
            pair.model, pair.clean, pair.corrupted, pair.metric, sweeps=["resid_pre", "mlp_in"]
        )
    with pytest.raises(ConfigError, match="'denoising' or 'noising'"):
        attribution_patching(pair.model, pair.clean, pair.corrupted, pair.metric, direction="both")
    with pytest.raises(InputError, match="same shape"):
        path_patch(pair.model, pair.clean, pair.corrupted[:, :-1], pair.metric, [(0, 1)], [Receiver(2, 0)])
    with pytest.raises(ConfigError, match="before its receiver"):
        path_patch(pair.model, pair.clean, pair.corrupted, pair.metric, [(2, 0)], [Receiver(1, 0)])


def test_a_metric_with_one_value_per_prompt_is_refused_with_the_fix(ioi_pair) -> None:
    pair = ioi_pair

    def per_prompt(logits: torch.Tensor) -> torch.Tensor:  # [batch]: forgot the .mean()
        at = logits[:, pair.end]
        rows = torch.arange(at.shape[0])
        return at[rows, pair.io] - at[rows, pair.s]

    with torch.no_grad():
        assert per_prompt(pair.model(pair.clean)).shape == (pair.clean.shape[0],)
    calls = [
        lambda: activation_patching(pair.model, pair.clean, pair.corrupted, per_prompt, sweep="heads"),
        lambda: attribution_patching(pair.model, pair.clean, pair.corrupted, per_prompt),
        lambda: path_patch(pair.model, pair.clean, pair.corrupted, per_prompt, [(0, 1)], [Receiver(2, 0)]),
        lambda: path_patching_senders(
            pair.model, pair.clean, pair.corrupted, per_prompt, [Receiver.logits()]
        ),
    ]
    for call in calls:
        with pytest.raises(InputError, match=r"must return a scalar.*\(24,\).*\.mean\(\)"):
            call()
    with pytest.raises(InputError, match="scalar tensor computed from the logits; it returned a float"):
        activation_patching(pair.model, pair.clean, pair.corrupted, lambda logits: 1.0, sweep="heads")  # type: ignore[arg-type, return-value]
    reduced = activation_patching(
        pair.model, pair.clean, pair.corrupted, lambda logits: per_prompt(logits).mean(), sweep="heads"
    )
    with torch.no_grad():
        clean = float(pair.metric(pair.model(pair.clean)))
    assert reduced.clean == pytest.approx(clean, abs=1e-5)
