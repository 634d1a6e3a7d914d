"""`rama features export`: Neuronpedia rows and the static site from a tiny store, and one-line errors
for an occupied --out or an unknown format."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cli_helpers import rama_in_process
from explain_helpers import tiny_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_store(tmp_path_factory.mktemp("export-cli") / "f.db")


def test_export_neuronpedia_then_refuse_the_same_folder(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "np"
    args = ["features", "export", str(store), "--format", "neuronpedia", "--out", str(out), "--no-progress",
            "--source-id", "1-res-mine", "--batch-size", "100"]  # fmt: skip
    result = rama_in_process(*args)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == f"wrote Neuronpedia rows to {out}/ (features/, activations/, explanations/, source.json)"
    )
    with gzip.open(out / "features" / "batch-0.jsonl.gz", "rt") as handle:
        features = [json.loads(line) for line in handle]
    assert len(features) == 24 and {f["layer"] for f in features} == {"1-res-mine"}
    again = rama_in_process(*args)
    assert again.returncode == 1 and again.stderr.strip().splitlines() == [
        f"rama: error: {str(out)!r} already holds files; choose another --out or remove it"
    ]


def test_export_html_writes_a_static_site(store: Path, tmp_path: Path) -> None:
    result = rama_in_process("features", "export", str(store), "--format", "html", "--out", str(tmp_path / "site"),
                             "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (
        tmp_path / "site" / "features" / "3.html"
    ).is_file()


def test_export_needs_a_known_format_and_an_out(store: Path, tmp_path: Path) -> None:
    bad = rama_in_process("features", "export", str(store), "--format", "csv", "--out", str(tmp_path / "x"))
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "rama: error: --format must be neuronpedia or html, not 'csv'"
    ]
    no_out = rama_in_process("features", "export", str(store))
    assert no_out.returncode == 1 and "--out must name the folder" in no_out.stderr
