"""How well EAP, EAP-IG and ACDC find the known circuits of rama's toys: ROC AUC of each method's
edge scores against the edges the toys' ground truth names, and the faithfulness of each method's
circuit of the same size as the truth (real patching).

    python benchmarks/discovery_toys.py [--out benchmarks/results/discovery_toys.json]

Ground-truth edges, from each toy's `ground_truth.json` roles (what the heads attend to and do):
- oracle (hand-set): its four true edges; every other edge has exactly zero effect.
- induction-2l: previous-token head 0.0 reads the token (`input -> a0.0<v>`) and feeds the induction
  heads' keys (`a0.0 -> a1.h<k>`); each induction head 1.h reads the current token as its query and
  the token to copy as its value (`input -> a1.h<q>`, `input -> a1.h<v>`) and writes the answer
  (`a1.h -> logits`).
- ioi (trained, 3 layers with MLPs): name movers 1.0, 1.2, 1.3 read the names as keys and values
  and write the answer; S-inhibition head 0.1 reads S2 and feeds the name movers' queries. Head 2.1
  (duplicate-token by its attention pattern) has no place in a path the toy's roles describe and is
  left out.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch


def induction_truth() -> list[str]:
    edges = ["input->a0.0<v>"]
    for h in range(4):
        edges += [f"a0.0->a1.{h}<k>", f"input->a1.{h}<q>", f"input->a1.{h}<v>", f"a1.{h}->logits"]
    return edges


def ioi_truth() -> list[str]:
    edges = ["input->a0.1<v>"]
    for h in (0, 2, 3):
        edges += [f"a1.{h}->logits", f"a0.1->a1.{h}<q>", f"input->a1.{h}<k>", f"input->a1.{h}<v>"]
    return edges


def score_methods(model: Any, task: Any, truth: list[str], threshold: float) -> dict[str, Any]:
    from rama.circuits.discovery import acdc, eap
    from rama.circuits.faithfulness import circuit_faithfulness, edge_auroc, top_edges

    rows: dict[str, Any] = {}
    for name, run in (
        ("eap", lambda: eap(model, task, progress=False)),
        ("eap-ig", lambda: eap(model, task, ig_steps=5, progress=False)),
        ("acdc", lambda: acdc(model, task, threshold, progress=False)),
    ):
        started = time.process_time()
        graph = run()
        seconds = time.process_time() - started
        ranked = graph.scores.nan_to_num().abs().argsort(descending=True)
        index = graph.edge_index()
        truth_ranks = sorted(int((ranked == index[e]).nonzero()) for e in truth)
        chosen = graph if name == "acdc" else top_edges(graph, len(truth))
        faithful = circuit_faithfulness(model, task, chosen) if bool(chosen.in_circuit.any()) else None
        missed = [e for e in truth if not bool(chosen.in_circuit[index[e]])]
        rows[name] = {
            "auroc": round(edge_auroc(graph, truth), 4),
            "circuit_edges": int(chosen.in_circuit.sum()),
            "faithfulness": None if faithful is None else round(faithful.normalised, 4),
            "true_edges_missed": missed,
            "worst_true_rank": truth_ranks[-1],
            "cpu_seconds": round(seconds, 2),
        }
        print(name, json.dumps(rows[name]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threshold", type=float, default=0.01, help="ACDC's τ")
    parser.add_argument("--out", default="benchmarks/results/discovery_toys.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import rama
    from rama.atomic import write_text
    from rama.circuits.tasks import CircuitTask, TaskBatch, induction_task, ioi_task, logit_difference_metric
    from rama.hooks.model import HookedModel
    from rama.toys import ioi as toy_ioi
    from rama.toys import pretrained
    from rama.toys.oracle import build_oracle

    hf, tokenizer, oracle, truth = build_oracle()
    oracle_model = HookedModel(hf, tokenizer, "oracle")
    last = torch.full((oracle.clean_tokens.shape[0],), oracle.clean_tokens.shape[1] - 1)
    metric = logit_difference_metric(oracle.answer_ids, oracle.wrong_ids, last)
    oracle_task = CircuitTask(
        "oracle", [TaskBatch(oracle.clean_tokens, oracle.corrupted_tokens, metric, last)]
    )
    induction = rama.load(pretrained("induction-2l"))
    ioi = rama.load(pretrained("ioi"))
    cases = {
        "oracle": (oracle_model, oracle_task, list(truth["true_edges"])),
        "induction-2l": (induction, induction_task(induction, n=32, half=10), induction_truth()),
        "ioi": (ioi, ioi_task(ioi, n=60, template_set=toy_ioi.TEMPLATES), ioi_truth()),
    }
    result: dict[str, Any] = {}
    for name, (model, task, edges) in cases.items():
        print(f"== {name}: {len(edges)} true edges")
        result[name] = {"true_edges": edges, "methods": score_methods(model, task, edges, args.threshold)}
    result["acdc_threshold"] = args.threshold
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
