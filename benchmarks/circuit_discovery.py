"""EAP, EAP-IG and ACDC on SmolLM2-135M's IOI task in one run: time as a multiple of one
forward+backward pass, peak memory, and what each finds (circuit size, faithfulness, MIB's CPR/CMD).

    python benchmarks/circuit_discovery.py [--model smollm2-135m] [--n 100] [--batch 20] [--steps 5]
        [--edges 200] [--acdc-seconds 600] [--graphs DIR] [--out benchmarks/results/circuit_discovery.json]

Times are CPU seconds of this process (`time.process_time`, threads included), steadier than wall
time on a shared machine. ACDC tries one edge per forward pass over all prompts; over SmolLM2's
70,651 edges that is far beyond a CPU session, so it runs for `--acdc-seconds` and its full time is
extrapolated from the measured seconds per edge (the edges it did not reach stay in its circuit,
which is why its faithfulness is near 1 and its size near the whole graph).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cpu_seconds(work: Callable[[], Any]) -> tuple[Any, float]:
    start = time.process_time()
    result = work()
    return result, time.process_time() - start


def forward_backward(model: Any, task: Any) -> None:
    """One forward and backward pass over every prompt (the model's weights get gradients, as in training)."""
    with torch.enable_grad():
        for batch in task.batches:
            model.hf.zero_grad(set_to_none=True)
            batch.metric(model(batch.clean)).sum().backward()
    model.hf.zero_grad(set_to_none=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def method_row(
    model: Any, task: Any, graph: Any, seconds: float, baseline: float, edges: int, curve: bool
) -> tuple[dict[str, Any], Any]:
    from rama.circuits.faithfulness import circuit_faithfulness, faithfulness_curve, top_edges

    chosen = graph if bool(graph.in_circuit.any()) else top_edges(graph, edges)
    kept = circuit_faithfulness(model, task, chosen)
    row: dict[str, Any] = {"method": graph.info["method"], "cpu_seconds": round(seconds, 1)}
    row.update(
        x_forward_backward=round(seconds / baseline, 2),
        edges_kept=kept.edges,
        faithfulness=round(kept.normalised, 4),
    )
    if curve:
        faith = faithfulness_curve(model, task, graph, progress=False)
        row.update(cpr=round(faith.cpr, 4), cmd=round(faith.cmd, 4), curve=faith.to_json())
    row["top_edges"] = [[graph.edges[i].name, round(float(graph.scores[i]), 4)]
                        for i in graph.scores.nan_to_num().abs().argsort(descending=True)[:10].tolist()]  # fmt: skip
    row["peak_rss_mib"] = round(peak_rss_mib())
    return row, chosen


def plot_curves(result: dict[str, Any], path: str) -> None:
    """Faithfulness against the share of edges kept, one line per method that has a curve."""
    from rama.plotting import pyplot, save_figure

    figure, axis = pyplot().subplots(figsize=(6.4, 4.2))
    for row in result["rows"]:
        if "curve" in row:
            curve = row["curve"]
            label = f"{row['method']} (CPR {row['cpr']:.3f}, CMD {row['cmd']:.3f})"
            axis.plot([100 * f for f in curve["fractions"]], curve["normalised"], marker="o", label=label)
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set(
        xscale="log",
        xlabel="edges kept (% of all, top-n by |score|, pruned)",
        ylabel="faithfulness (0 corrupted, 1 clean)",
    )
    axis.set_title(f"{result['model']}, IOI ({result['prompts']} prompts): real patching")
    axis.legend(frameon=False)
    figure.tight_layout()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=100, help="IOI prompts")
    parser.add_argument("--batch", type=int, default=20, help="prompts per forward pass")
    parser.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps")
    parser.add_argument("--edges", type=int, default=200, help="EAP/EAP-IG circuit: the top-N edges (pruned)")
    parser.add_argument("--acdc-seconds", type=float, default=600, help="ACDC's wall-clock budget")
    parser.add_argument("--threshold", type=float, default=0.01, help="ACDC's τ (KL)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--graphs", default="", help="folder for each method's graph.json and page")
    parser.add_argument("--out", default="benchmarks/results/circuit_discovery.json")
    parser.add_argument(
        "--plot", default="docs/circuits/discovery-smollm2-curves.png", help="the curves' figure"
    )
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from --out and stop")
    args = parser.parse_args()
    if args.plot_only:
        plot_curves(json.loads(Path(args.out).read_text()), args.plot)
        return
    torch.set_num_threads(args.threads)

    import rama
    from rama.atomic import write_text
    from rama.circuits.discovery import acdc, eap
    from rama.circuits.graph_render import save_graph_page
    from rama.circuits.tasks import ioi_task

    model = rama.load(args.model)
    task = ioi_task(model, n=args.n, batch_size=args.batch)
    forward_backward(model, task)  # warm-up
    _, baseline = cpu_seconds(lambda: forward_backward(model, task))
    print(
        f"{task.n_prompts} IOI prompts in {len(task.batches)} batches; one forward+backward: {baseline:.1f} CPU s"
    )
    rows = []
    for name, run in (
        ("eap", lambda: eap(model, task, progress=False)),
        ("eap-ig", lambda: eap(model, task, ig_steps=args.steps, progress=False)),
        ("acdc", lambda: acdc(model, task, args.threshold, max_seconds=args.acdc_seconds, progress=False)),
    ):
        graph, seconds = cpu_seconds(run)
        row, chosen = method_row(model, task, graph, seconds, baseline, args.edges, curve=name != "acdc")
        if name == "acdc":
            tested = graph.info["edges_tested"]
            per_edge = seconds / max(tested, 1)
            row.update(
                edges_tested=tested, complete=graph.info["complete"], cpu_seconds_per_edge=round(per_edge, 2)
            )
            row["extrapolated_cpu_hours"] = round(per_edge * graph.n_edges / 3600, 1)
            row["x_forward_backward"] = round(per_edge * graph.n_edges / baseline, 1)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("curve", "top_edges")}))
        if args.graphs:
            folder = Path(args.graphs) / name
            folder.mkdir(parents=True, exist_ok=True)
            chosen.save(folder / "graph.json")
            save_graph_page(chosen, folder / "graph.html")
    result = {
        "model": args.model, "task": "ioi", "prompts": task.n_prompts, "batch": args.batch, "edges_total": 70651,
        "forward_backward_cpu_seconds": round(baseline, 1), "rows": rows,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    result["edges_total"] = rows[0].get("curve", {}).get("edges", [0])[-1] or result["edges_total"]
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    plot_curves(result, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
