"""`rama circuits heads`: the JSON table, the heatmaps, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import rama
from cli_helpers import rama_in_process
from rama.circuits import head_table
from rama.toys import pretrained


def test_heads_json_equals_the_library_table_and_out_writes_heatmaps(tmp_path: Path) -> None:
    toy = str(pretrained("induction-2l"))
    out = tmp_path / "heads"
    result = rama_in_process("circuits", "heads", toy, "--half", "20", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed == head_table(rama.load(toy), batch=8, half=20).to_json()
    assert printed == json.loads((out / "head_scores.json").read_text())
    assert set(printed) == {"previous_token", "duplicate_token", "induction", "copying"}
    assert [len(row) for row in printed["induction"]] == [4, 4]  # [layer][head]
    for name in [*printed, "heads"]:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    text = rama_in_process("circuits", "heads", toy, "--half", "20", "--top", "2")
    assert text.returncode == 0
    induction_line = next(line for line in text.stdout.splitlines() if line.startswith("induction"))
    assert induction_line.count(", ") == 1 and "1." in induction_line  # two heads, from layer 1


def test_heads_errors_are_one_line(tmp_path: Path) -> None:
    toy = str(pretrained("induction-2l"))
    too_long = rama_in_process("circuits", "heads", toy, "--half", "40")
    assert too_long.returncode == 1 and "half from 2 to 24" in too_long.stderr
    afile = tmp_path / "x.png"
    afile.write_text("")
    result = rama_in_process("circuits", "heads", toy, "--out", str(afile))
    assert result.returncode == 1 and "is a file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
