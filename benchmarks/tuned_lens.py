"""rama's logit and tuned lens against PyPI `tuned-lens` (AlignmentResearch, 0.2.0) on the same model
and the same held-out tokens: per-layer KL(final ‖ lens) from both implementations.

    python benchmarks/tuned_lens.py --lens /work/artifacts/tuned-lens-smollm2 [--model smollm2-135m]
        [--tokens 512] [--context-size 128] [--peer-python /work/venvs/tunedlens/bin/python]
        [--out benchmarks/results/tuned_lens.json]

The script runs twice: in rama's venv it writes the held-out token batches rama's `lens_curves` uses,
rama's own curves on them, and rama's trained translators in tuned-lens's file format (`params.pt`,
`config.json`); then it runs itself in the tuned-lens venv (`compare`, which imports no rama) to evaluate
tuned-lens's `LogitLens` and its `TunedLens` loaded with rama's translators on the same positions. Both
packages put the translator residually, `h + A h + b`; tuned-lens's translator i reads
`hidden_states[i]` (the input of block i), so rama's layer l (the residual after block l) is its i = l + 1.
Agreement of the two columns checks that rama's lens means what tuned-lens's does (same unembedding,
same final norm, same KL). Training tuned-lens's own lens on this machine was not possible in the time
available (see docs/circuits.md); `compare` can be pointed at one with `--peer-lens`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def export(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """rama's side: token batches, positions, curves, and the translators in tuned-lens's format."""
    import rama
    from rama.circuits.lenses import corpus_batches, lens_curves, load_tuned_lens, scored_positions
    from rama.models.loading import resolve_model_dir

    model = rama.load(args.model)
    tuned = load_tuned_lens(args.lens, model)
    batches = list(
        corpus_batches(model, args.corpus or None, "test", args.tokens, 1, args.context_size, seed=0)
    )
    tokens = torch.cat(batches)  # [n_contexts, context]
    keep = scored_positions(model, tokens)
    torch.save({"tokens": tokens, "keep": keep}, work / "tokens.pt")
    n = model.cfg.n_layers
    state = {}
    for layer in range(n - 1):  # tuned-lens's translator l + 1 reads rama's layer l; its 0 stays the identity
        translator = tuned.translators[layer]
        assert isinstance(translator, torch.nn.Linear)
        state[f"{layer + 1}.weight"] = translator.weight.detach().clone()
        state[f"{layer + 1}.bias"] = translator.bias.detach().clone()
    state["0.weight"] = torch.zeros_like(state["1.weight"])
    state["0.bias"] = torch.zeros_like(state["1.bias"])
    peer = work / "peer-lens"
    peer.mkdir()
    torch.save(state, peer / "params.pt")
    config = {"base_model_name_or_path": str(resolve_model_dir(args.model)), "d_model": model.cfg.d_model,
              "num_hidden_layers": n, "bias": True, "base_model_revision": None, "unembed_hash": None,
              "lens_type": "linear_tuned_lens"}  # fmt: skip
    (peer / "config.json").write_text(json.dumps(config))
    curves = lens_curves(model, tuned, args.tokens, args.corpus or None, 1, args.context_size, progress=False)
    return {"model_dir": str(resolve_model_dir(args.model)), "rama": curves.to_dict()}


def compare(work: Path, model_dir: str, lens_dir: str) -> dict[str, list[float]]:
    """tuned-lens's side (its own venv): KL per hidden state for its logit lens and tuned lens."""
    here = (
        Path(__file__).resolve().parent
    )  # this file is called tuned_lens.py: keep it from shadowing the package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.modules.pop("tuned_lens", None)
    from transformers import AutoModelForCausalLM
    from tuned_lens.nn.lenses import LogitLens, TunedLens

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    logit_lens = LogitLens.from_model(model)
    tuned_lens = TunedLens.from_model_and_pretrained(model, lens_resource_id=lens_dir, map_location="cpu")
    saved = torch.load(work / "tokens.pt", weights_only=True)
    tokens, keep = saved["tokens"], saved["keep"]
    n_layers = model.config.num_hidden_layers
    sums = {name: torch.zeros(n_layers, dtype=torch.float64) for name in ("logit", "tuned")}
    count = 0
    with torch.no_grad():
        for row in range(len(tokens)):
            out = model(tokens[row : row + 1], output_hidden_states=True)
            mask = keep[row : row + 1]
            final = out.logits[mask].float().log_softmax(-1)  # [n, vocab]
            count += int(mask.sum())
            for index, hidden in enumerate(out.hidden_states[:-1]):  # [1, pos, d_model], input of block index
                for name, lens in (("logit", logit_lens), ("tuned", tuned_lens)):
                    predicted = lens(hidden, idx=index)[mask].float().log_softmax(-1)
                    sums[name][index] += float((final.exp() * (final - predicted)).sum())
    return {name: (values / count).tolist() for name, values in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", nargs="?", default="run", choices=["run", "compare"])
    parser.add_argument("--lens", default="/work/artifacts/tuned-lens-smollm2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="", help="text source (default: the built-in corpus)")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--peer-python", default="/work/venvs/tunedlens/bin/python")
    parser.add_argument(
        "--peer-lens", default="", help="a lens trained by tuned-lens itself (compare its KL too)"
    )
    parser.add_argument("--work", default="")
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--out", default="benchmarks/results/tuned_lens.json")
    args = parser.parse_args()
    if args.phase == "compare":
        result = {"peer": compare(Path(args.work), args.model_dir, str(Path(args.work) / "peer-lens"))}
        if args.peer_lens:
            result["peer_trained"] = compare(Path(args.work), args.model_dir, args.peer_lens)
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="tuned-lens-bench-"))
    ours = export(args, work)
    command = [
        args.peer_python,
        __file__,
        "compare",
        "--work",
        str(work),
        "--model-dir",
        str(ours["model_dir"]),
    ]
    if args.peer_lens:
        command += ["--peer-lens", args.peer_lens]
    peer = json.loads(
        subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
    )
    rama_curves = ours["rama"]
    assert isinstance(rama_curves, dict)
    rows = []
    for layer in rama_curves["layers"]:
        row = {"layer": layer, "rama_logit": rama_curves["kl"]["logit"][layer],
               "rama_tuned": rama_curves["kl"]["tuned"][layer]}  # fmt: skip
        if layer + 1 < len(
            peer["peer"]["logit"]
        ):  # HF's last hidden state is after the final norm: no column
            row |= {
                "peer_logit": peer["peer"]["logit"][layer + 1],
                "peer_tuned": peer["peer"]["tuned"][layer + 1],
            }
        rows.append(row)
    record = {"model": args.model, "tokens": rama_curves["tokens"], "peer_embedding_kl": peer["peer"]["logit"][0],
              "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"# {args.model}, {rama_curves['tokens']} held-out positions; KL(final || lens) in nats")
    print("layer  rama logit  peer logit  rama tuned  peer tuned")
    for row in rows:
        cells = [row.get(k) for k in ("rama_logit", "peer_logit", "rama_tuned", "peer_tuned")]
        print(f"{row['layer']:5d}  " + "  ".join("         —" if c is None else f"{c:10.4f}" for c in cells))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
