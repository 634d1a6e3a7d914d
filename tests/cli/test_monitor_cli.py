"""`rama monitor` end to end on a tiny Llama saved as a local folder: a saved probe (given as its folder
and as its probe.json) and an SAE latent (given a threshold, and calibrated on a control corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import rama
from cli_helpers import rama_in_process
from features.feature_helpers import tiny_sae, word_tokenizer
from probes.probe_helpers import control_words, word_statements
from rama.monitor import LatentWatcher, Monitor, calibrate, probe_watcher
from rama.probes import ProbeConfig, load_probe, save_probe, train_probe
from tiny_models import build

SITE = "blocks.1.hook_resid_post"
PROMPT = "w40 w41 w42 w10"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("monitor-cli")
    build("llama").save_pretrained(root / "model")
    word_tokenizer().save_pretrained(root / "model")
    model = rama.load(str(root / "model"))
    config = ProbeConfig(kind="diffmean", progress=False, control=40)
    save_probe(train_probe(model, word_statements(40), SITE, control_words(), config), root / "probe")
    tiny_sae().save(root / "sae")
    sentences = [
        f"This is {text} again." for text in control_words(30)
    ]  # one sentence of 30+ characters each
    (root / "control.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in sentences))
    return root


def test_monitor_prints_marks_and_events(root: Path) -> None:
    events = root / "events.jsonl"
    args = ["monitor", "--probe", str(root / "probe" / "probe.json"), "--feature", f"{root / 'sae'}:7=0",
            "--max-new-tokens", "6", "--events", str(events), "--window", "2", PROMPT]  # fmt: skip
    done = rama_in_process(*args)
    assert done.returncode == 0, done.stderr
    model = rama.load(str(root / "model"))
    sae = tiny_sae()
    monitor = Monitor(
        model, [probe_watcher(load_probe(root / "probe"), "probe"), LatentWatcher("sae:7", sae, 7, 0.0)]
    )
    expected = Monitor(model, monitor.watchers, type(monitor.config)(window=2)).generate(PROMPT, 6)
    lines = done.stdout.splitlines()
    assert lines[0] == expected.marked_text() and "[[" in lines[0]
    assert lines[-2].startswith("probe  ") and lines[-1].startswith("sae:7  ")
    assert f"events {len([e for e in expected.events if e.watcher == 'sae:7'])}" in lines[-1]
    written = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["position"], e["watcher"]) for e in written] == [
        (e.position, e.watcher) for e in expected.events
    ]
    assert written[0]["score"] == pytest.approx(expected.events[0].score)


def test_events_to_stdout_and_calibrated_latent(root: Path) -> None:
    args = ["monitor", "--probe", str(root / "probe"), "--feature", f"{root / 'sae'}:3", "--corpus",
            str(root / "control.jsonl"), "--control", "30", "--fpr", "0.05", "--max-new-tokens", "5",
            "--events", "-", "--flag-prompt", PROMPT]  # fmt: skip
    done = rama_in_process(*args)
    assert done.returncode == 0, done.stderr
    model = rama.load(str(root / "model"))
    watchers = [probe_watcher(load_probe(root / "probe"), "probe"), LatentWatcher("sae:3", tiny_sae(), 3)]
    from rama.probes import control_sentences

    control = control_sentences(30, 0, root / "control.jsonl")
    monitor = calibrate(Monitor(model, watchers), control, 0.05)
    line = next(line for line in done.stderr.splitlines() if line.startswith("sae:3"))
    assert f"threshold {monitor.watchers[1].threshold:.4f}" in line
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(e["score"] > e["threshold"] for e in events)
    assert any(e["generated"] is None for e in events) or not events  # --flag-prompt lets prompt tokens flag
    assert torch.isfinite(torch.tensor([e["score"] for e in events])).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give at least one --probe or --feature"),
        (["--feature", "nowhere:3"], "is not an SAE folder"),
        (["--feature", "sae:x"], "is not SAE_DIR:ID"),
        (["--window", "0"], "window must be a whole number"),
        (["--probe", "nowhere"], "is not a probe folder"),
    ],
)
def test_bad_options_are_one_line_errors(root: Path, extra: list[str], message: str) -> None:
    extra = [e.replace("sae:", f"{root / 'sae'}:") if e == "sae:x" else e for e in extra]
    if extra[:2] == ["--window", "0"]:
        extra = ["--probe", str(root / "probe"), *extra]
    done = rama_in_process("monitor", "--model", str(root / "model"), *extra, PROMPT)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
