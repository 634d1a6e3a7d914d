"""One rank of a split feature build, started by the tests as a real process.

`python features_worker.py OUT CORPUS`: builds two feature stores of the tiny Llama's SAE, one over
given token rows (OUT/rows.db) and one over a token count from CORPUS (OUT/corpus.db); each rank
analyses its stride of the batches and rank 0 writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' shared helpers
sys.path.insert(0, str(Path(__file__).parents[1] / "features"))

import torch
from feature_helpers import tiny_model, tiny_sae, token_rows
from launch_helpers import exit_code

from rama.distributed import setup_distributed
from rama.features import BuildConfig, build

CONFIG = BuildConfig(batch_size=4, context_size=16, tokens=22 * 16, top_k=6, context_left=3, context_right=2,
                     logit_tokens=4, neighbours=3, samples_per_bin=2, progress=False)  # fmt: skip


def build_both(out: Path, corpus: str) -> None:
    """22 rows in batches of 4: six batches, the last one short, so the ranks' shares differ."""
    model, sae = tiny_model(), tiny_sae()
    build(sae, model, token_rows(22), out=out / "rows.db", config=CONFIG)
    build(sae, model, CONFIG.tokens, corpus=corpus, out=out / "corpus.db", config=CONFIG)


def main() -> int:
    torch.set_num_threads(1)
    setup_distributed()
    return exit_code(lambda: build_both(Path(sys.argv[1]), sys.argv[2]))


if __name__ == "__main__":
    sys.exit(main())
