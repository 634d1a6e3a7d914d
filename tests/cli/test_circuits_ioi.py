"""`rama circuits ioi`: the printed JSON is the written one, the figure is a PNG, the text names every
class, and mistakes are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import rama_in_process
from rama.cli.circuits_ioi import ioi_text
from rama.toys import pretrained


def test_ioi_on_the_toy_writes_json_and_figure(tmp_path: Path) -> None:
    toy = str(pretrained("ioi"))
    out = tmp_path / "ioi"
    args = ("circuits", "ioi", toy, "--template-set", "toy-ioi", "--n", "40", "--templates", "2")
    result = rama_in_process(*args, "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed == json.loads((out / "ioi_circuit.json").read_text())
    assert (out / "ioi_circuit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert printed["n_prompts"] == 40 and printed["accuracy"] >= 0.9
    assert [1, 2] in printed["circuit"] and printed["classes"]["s_inhibition"][0]["layer"] == 0
    assert (
        len(printed["effects"]["logits"]) == 3 and len(printed["attention"]["END->IO"][0]) == 4
    )  # [layer][head]
    text = ioi_text(printed)
    assert "logit difference" in text and "faithfulness" in text
    for name in printed["classes"]:
        assert name in text
    again = rama_in_process(*args, "--out", str(out))
    assert again.returncode == 1 and "already holds ioi_circuit.json" in again.stderr


def test_ioi_errors_are_one_line(tmp_path: Path) -> None:
    toy = str(pretrained("ioi"))
    wrong_words = rama_in_process("circuits", "ioi", toy, "--n", "8")  # built-in templates: not its words
    assert wrong_words.returncode == 1 and "does not know" in wrong_words.stderr
    bad_set = rama_in_process("circuits", "ioi", toy, "--template-set", "poems")
    assert bad_set.returncode == 1 and "--template-set is 'real' or 'toy-ioi'" in bad_set.stderr
    bad_threshold = rama_in_process("circuits", "ioi", toy, "--threshold", "2")
    assert bad_threshold.returncode == 1 and "threshold" in bad_threshold.stderr
    for result in (wrong_words, bad_set, bad_threshold):  # one error line (after any warnings)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("rama: error"), result.stderr
