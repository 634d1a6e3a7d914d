"""rama's EAP against auto-circuit's on the same models and tasks: do they find the same top edges?

    python benchmarks/eap_crosscheck.py --reference-python /work/venvs/autocircuit/bin/python
        [--tasks induction ioi] [--n 32] [--half 10] [--batch 16] [--out benchmarks/results/eap_crosscheck.json]

rama's side runs here, on the shipped toys (Hugging Face GPT-2 folders): `induction-2l` with
`induction_task(model, n, half)` (clean `BOS A A`, corrupted `BOS B C`, metric = mean
log-probability of the second copy; the toy's MLPs are exactly zero) and `ioi` (3 layers with real
MLPs) with `ioi_task(model, n, template_set=rama.toys.ioi.TEMPLATES)` (metric = logit(IO) − logit(S)
at the end, corrupted = ABC), then `eap(...)`. The tasks' tokens and rama's metric values go to a
temporary folder as a `.pt` file; `benchmarks/eap_crosscheck_reference.py` runs under
`--reference-python` (a virtualenv with auto-circuit and TransformerLens, see
docs/circuits-discovery.md) on the same folder and tokens and writes auto-circuit's scores back.

Conventions, converted and not fitted: auto-circuit's loss is minus the batch mean of the metric,
so on a batch of b prompts its score is −(1/b) Σ over the batch of (corrupted − clean) ·
∂metric/∂input, while rama reports the mean over all n prompts of the same product: rama =
Σ over batches of −(b/n) × auto-circuit's batch score. Both sum over positions.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

REFERENCE_SCRIPT = Path(__file__).with_name("eap_crosscheck_reference.py")
NODE_NAMES = {"Resid Start": "input", "Resid End": "logits"}


def rama_edge_name(name: str) -> str:
    """auto-circuit's `A0.1->A1.2.K`, `Resid Start->MLP 0`, `MLP 1->Resid End` as rama names them:
    `a0.1->a1.2<k>`, `input->m0`, `m1->logits`."""
    up, down = name.split("->")
    port = ""
    if down.startswith("A") and down.count(".") == 2:
        down, port = down.rsplit(".", 1)
    return f"{_node(up)}->{_node(down)}" + (f"<{port.lower()}>" if port else "")


def _node(name: str) -> str:
    if name in NODE_NAMES:
        return NODE_NAMES[name]
    if name.startswith("MLP "):
        return f"m{name[4:]}"
    return "a" + name[1:]  # A1.2 -> a1.2


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties sharing their mean rank (as Spearman's ρ needs)."""
    order = values.argsort()
    ranks = torch.empty(len(values), dtype=torch.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the average ranks."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def top_set(names: list[str], scores: torch.Tensor, k: int) -> set[str]:
    """The k edges of largest |score| (how both libraries rank edges for a circuit)."""
    return {names[i] for i in scores.abs().argsort(descending=True)[:k].tolist()}


def compare(ours: dict[str, float], theirs: dict[str, float], tops: list[int]) -> dict[str, Any]:
    """Agreement over the edges both graphs have (`theirs` already in rama's units)."""
    shared = [name for name in ours if name in theirs]
    a = torch.tensor([ours[n] for n in shared], dtype=torch.float64)
    b = torch.tensor([theirs[n] for n in shared], dtype=torch.float64)
    live = (a != 0) | (b != 0)
    diff = (a - b).abs()
    result: dict[str, Any] = {
        "edges_rama": len(ours),
        "edges_reference": len(theirs),
        "edges_shared": len(shared),
        "edges_nonzero": int(live.sum()),
        "spearman_signed": round(spearman(a, b), 6),
        "spearman_signed_nonzero": round(spearman(a[live], b[live]), 6),
        "spearman_abs_nonzero": round(spearman(a[live].abs(), b[live].abs()), 6),
        "max_abs_diff": float(diff.max()),
        "max_abs_score": float(a.abs().max()),
        "max_rel_diff": float(diff.max() / a.abs().max()),
        "sign_agreement_nonzero": float(((a[live] > 0) == (b[live] > 0)).double().mean()),
    }
    for k in tops:
        result[f"top{k}_overlap"] = len(top_set(shared, a, k) & top_set(shared, b, k))
    return result


def task_tensors(task: Any, model: Any) -> list[dict[str, Any]]:
    """Each batch as plain tensors, with rama's metric on its clean prompts."""
    with torch.no_grad():
        return [
            {"clean": b.clean, "corrupted": b.corrupted, "metric": b.metric(model(b.clean))}
            for b in task.batches
        ]


def rama_side(kind: str, n: int, half: int, batch: int) -> tuple[Any, Any, list[dict[str, Any]], Path]:
    """The toy, the task, the task's batches as plain tensors, and the toy's HF folder."""
    import rama
    from rama.circuits.ioi_prompts import ioi_prompts
    from rama.circuits.tasks import induction_task, ioi_task
    from rama.toys.ioi import TEMPLATES
    from rama.toys.zoo import pretrained

    folder = pretrained("induction-2l" if kind == "induction" else "ioi")
    model = rama.load(folder)
    if kind == "induction":
        task = induction_task(model, n=n, half=half, batch_size=batch)
        batches = [{**b, "half": half} for b in task_tensors(task, model)]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the toy's vocabulary lacks some of the generator's places
            task = ioi_task(model, n=n, batch_size=batch, template_set=TEMPLATES)
            groups = ioi_prompts(model.tokenizer, n, 0, template_set=TEMPLATES)
        batches = task_tensors(task, model)
        # the metric reads the last position; the generator's groups are the task's rows, in order
        assert all(b.positions.eq(b.clean.shape[1] - 1).all() for b in task.batches)
        rows = torch.cat([g.clean.flatten() for g in groups])
        assert torch.equal(rows, torch.cat([b.clean.flatten() for b in task.batches]))
        io, s = torch.cat([g.io for g in groups]), torch.cat([g.s for g in groups])
        sizes = [len(b["clean"]) for b in batches]
        batches = [
            {**b, "io": i, "s": j} for b, i, j in zip(batches, io.split(sizes), s.split(sizes), strict=True)
        ]
    return model, task, batches, folder


def run_reference(
    python: str, folder: Path, batches: list[dict[str, Any]], sizes: list[int]
) -> dict[str, Any]:
    """auto-circuit's scores and checks, from the reference virtualenv (a subprocess)."""
    from rama.errors import ConfigError

    with tempfile.TemporaryDirectory(prefix="eap-crosscheck-") as scratch:
        inputs, out = Path(scratch) / "task.pt", Path(scratch) / "reference.pt"
        torch.save({"batches": batches}, inputs)
        command = [python, str(REFERENCE_SCRIPT), "--model-dir", str(folder), "--inputs", str(inputs)]
        command += ["--out", str(out), "--sizes", *map(str, sizes)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        except OSError as error:
            raise ConfigError(f"cannot run --reference-python {python!r}: {error}") from error
        if done.returncode != 0 or not out.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise ConfigError(
                f"the reference script failed (exit {done.returncode}) under {python} (a virtualenv with auto-circuit: "
                f"see docs/circuits-discovery.md):\n{tail}"
            )
        return dict(torch.load(out, weights_only=True))


def in_rama_units(per_batch: list[dict[str, float]], sizes: list[int]) -> dict[str, float]:
    """Σ over batches of −(b/n) × auto-circuit's batch score, under rama's edge names (module docstring)."""
    n = sum(sizes)
    total: dict[str, float] = {}
    for scores, size in zip(per_batch, sizes, strict=True):
        for name, score in scores.items():
            key = rama_edge_name(name)
            total[key] = total.get(key, 0.0) - size / n * score
    return total


def patched_circuits(model: Any, task: Any, graph: Any, sizes: list[int]) -> dict[int, Any]:
    """rama's circuits of the k edges of largest |score| (unpruned) and the metric with every other
    edge patched to the corrupted prompt (`circuit_faithfulness`)."""
    from rama.circuits.faithfulness import circuit_faithfulness, top_edges

    result = {}
    for k in sizes:
        circuit = top_edges(graph, k, pruned=False)
        kept = circuit_faithfulness(model, task, circuit)
        edges = [e.name for e in circuit.circuit_edges()]
        result[k] = {"faithfulness": kept, "edges": edges}
    return result


def compare_circuits(ours: dict[int, Any], theirs: dict[int, Any]) -> list[dict[str, Any]]:
    """Per circuit size: the same edges? the metric with everything else patched, on both sides."""
    rows = []
    for k, mine in ours.items():
        other = theirs[k]
        faith = mine["faithfulness"]
        same = set(mine["edges"]) == {rama_edge_name(name) for name in other["edges"]}
        row = {
            "edges": k,
            "same_edges": same,
            "metric_rama": faith.circuit,
            "metric_reference": other["metric"],
        }
        row["abs_diff"] = abs(faith.circuit - other["metric"])
        row["faithfulness_rama"] = round(faith.normalised, 6)
        row["faithfulness_reference"] = round(
            (other["metric"] - faith.corrupted) / (faith.clean - faith.corrupted), 6
        )
        rows.append(row)
    return rows


def crosscheck(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from rama.circuits.discovery import eap

    model, task, batches, folder = rama_side(kind, args.n, args.half, args.batch)
    graph = eap(model, task, progress=False)
    live = int((graph.scores != 0).sum())  # past these, circuits differ only in which zero-score edges tie in
    sizes = [k for k in args.sizes if k <= live]
    reference = run_reference(args.reference_python, folder, batches, sizes)
    ours = {edge.name: float(score) for edge, score in zip(graph.edges, graph.scores.tolist(), strict=True)}
    batch_sizes = [len(b["clean"]) for b in batches]
    theirs = in_rama_units(reference["scores"], batch_sizes)
    stats = compare(ours, theirs, [5, 10, 20])
    print(f"\n== {kind}: {folder.name}, {task.n_prompts} prompts in batches of {batch_sizes} ==")
    print_table(ours, theirs, {**reference["checks"], **stats}, 20)
    circuits = compare_circuits(patched_circuits(model, task, graph, sizes), reference["circuits"])
    print_circuits(circuits)
    return {
        "model": f"{folder.name} (rama.toys.zoo.pretrained)",
        "prompts": task.n_prompts,
        "batches": batch_sizes,
        "rama_seconds": graph.info["seconds"],
        "reference_seconds": round(reference["seconds"], 2),
        "reference_versions": reference["versions"],
        "checks": reference["checks"],
        "comparison": stats,
        "circuits": circuits,
        "scores": {
            name: [ours[name], theirs.get(name)] for name in sorted(ours, key=lambda n: -abs(ours[n]))
        },
    }


def print_circuits(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'edges':>6} {'same':>5} {'metric rama':>12} {'auto-circuit':>13} {'|diff|':>9} {'faithfulness':>12}"
    )
    for row in rows:
        print(
            f"{row['edges']:>6} {row['same_edges']!s:>5} {row['metric_rama']:>12.5f} "
            f"{row['metric_reference']:>13.5f} {row['abs_diff']:>9.2e} {row['faithfulness_rama']:>12.4f}"
        )


def print_table(ours: dict[str, float], theirs: dict[str, float], stats: dict[str, Any], rows: int) -> None:
    names = sorted(ours, key=lambda n: -abs(ours[n]))[:rows]
    their_rank = {n: i + 1 for i, n in enumerate(sorted(theirs, key=lambda n: -abs(theirs[n])))}
    print(f"\n{'rank':>4}  {'edge':<18} {'rama':>10} {'auto-circuit':>13} {'ref rank':>8}")
    for i, name in enumerate(names, 1):
        print(
            f"{i:>4}  {name:<18} {ours[name]:>10.5f} {theirs.get(name, float('nan')):>13.5f} {their_rank[name]:>8}"
        )
    print()
    for key, value in stats.items():
        print(f"{key:>26}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", required=True, help="python of a virtualenv with auto-circuit")
    parser.add_argument("--n", type=int, default=32, help="prompts")
    parser.add_argument("--half", type=int, default=10, help="tokens in each copy")
    parser.add_argument("--batch", type=int, default=16, help="prompts per batch (at most)")
    parser.add_argument("--tasks", nargs="+", default=["induction", "ioi"], choices=["induction", "ioi"])
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[1, 5, 10, 20, 50, 100], help="circuit sizes to patch"
    )
    parser.add_argument("--out", default="benchmarks/results/eap_crosscheck.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from rama.atomic import write_text

    results = {kind: crosscheck(kind, args) for kind in args.tasks}
    result = {
        "settings": {"n": args.n, "half": args.half, "batch": args.batch, "seed": 0},
        "conversion": "rama = sum over batches of -(b/n) x auto-circuit's batch score (its loss: minus the batch mean)",
        "tasks": results,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
