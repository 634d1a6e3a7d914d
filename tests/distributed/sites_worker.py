"""One rank of a small sites-across-ranks run, started by the tests as a real process.

`python sites_worker.py OUT CORPUS`: trains two SAEs (two sites of the tiny Llama) with
`distribute_sites=True` into OUT/<site>, and writes OUT/rank<r>.json: the sites this rank returned.
`python sites_worker.py OUT CORPUS latents`: one latent-sharded SAE of the first site through the
same runner (`train_many`), every rank on the same tokens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # the tests' shared helpers

import torch

from features.feature_helpers import tiny_model
from rama.activations import HarvestConfig
from rama.distributed import setup_distributed
from rama.errors import RamaError
from rama.sae import TrainConfig, train_many
from rama.sae.runner import Job

SITES = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
HARVEST = HarvestConfig(tokens=5 * 4 * 32, batch_size=4, context_size=32, progress=False)


def jobs(out: Path, parallel: str = "data") -> list[Job]:
    config = TrainConfig.create(architecture="topk", d_sae=48, k=4, batch_size=32, total_tokens=32 * 30,
                                progress=False, seed=2, log_every=5, checkpoint_every=10, parallel=parallel)  # fmt: skip
    sites = SITES if parallel == "data" else SITES[:1]
    return [Job(site, out / site, config) for site in sites]


def main() -> int:
    torch.set_num_threads(1)
    out, corpus = Path(sys.argv[1]), sys.argv[2]
    parallel = sys.argv[3] if len(sys.argv) > 3 else "data"
    try:
        current = setup_distributed()
        results = train_many(tiny_model(), jobs(out, parallel), corpus=corpus, harvest_config=HARVEST,
                             eval_tokens=128, distribute_sites=parallel == "data", stream=False)  # fmt: skip
    except RamaError as error:
        print(f"rama: error: {error}", file=sys.stderr)
        return 1
    keys = ("site_rank", "processes", "harvested_tokens", "tokens")
    mine = [{"site": sae.cfg.hook_name, **{k: metrics[k] for k in keys if k in metrics}}
            for sae, metrics in results]  # fmt: skip
    (out / f"rank{current.rank}.json").write_text(json.dumps(mine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
