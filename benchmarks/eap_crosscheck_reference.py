"""The reference side of `benchmarks/eap_crosscheck.py`: auto-circuit's EAP on a TransformerLens model.

Runs in its own virtualenv (auto-circuit 1.0.1 needs TransformerLens < 4; see
`docs/circuits-discovery.md`, "Cross-check against auto-circuit") and imports nothing from rama:

    python benchmarks/eap_crosscheck_reference.py --model-dir HF_GPT2_FOLDER --inputs task.pt --out ref.pt

`task.pt` holds `{"batches": [...]}`, each batch plain tensors: `clean`, `corrupted` `[b, pos]`,
rama's per-prompt metric on the clean prompts (`metric [b]`) and either `half` (induction: mean
log-probability of the second copy) or `io`, `s` `[b]` (IOI: logit(IO) − logit(S) at the end). It

1. builds a `HookedTransformer` from the Hugging Face GPT-2 folder with TransformerLens's own GPT-2
   weight conversion and no weight processing (no LayerNorm folding, no centring), and checks its
   logits against Hugging Face's;
2. evaluates the task's metric on its own logits (checked against rama's values);
3. wraps the model with auto-circuit's `patchable_model` (factorized graph, separate q/k/v inputs,
   every position patched at once) and runs `mask_gradient_prune_scores` at mask value 0 with
   resample ablation from the corrupted prompts on each batch: auto-circuit's fast EAP (its docs:
   equal to `edge_attribution_patching_prune_scores` when the mask is 0). The loss is auto-circuit's
   own (`logprob`/`avg_val` or `logit`/`avg_diff`, minus the batch mean of the metric); the only
   plumbing is the output slice the induction metric reads (positions `half … 2·half−1`).

It writes one `{edge name: score}` per batch in auto-circuit's names (`A0.1->A1.2.K`, `Resid Start`,
`MLP 0`, `Resid End`), the parity numbers and the package versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from typing import Any

import torch
import transformer_lens as tl
from auto_circuit.data import PromptDataLoader, PromptDataset
from auto_circuit.prune import run_circuits
from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
from auto_circuit.types import AblationType, PatchType
from auto_circuit.utils.graph_utils import patchable_model
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformers import GPT2LMHeadModel

GPT2_TO_TL = {  # HookedTransformerConfig field: GPT2Config field
    "n_layers": "n_layer",
    "d_model": "n_embd",
    "n_ctx": "n_positions",
    "n_heads": "n_head",
    "d_vocab": "vocab_size",
    "act_fn": "activation_function",
    "eps": "layer_norm_epsilon",
}


def tl_from_hf(folder: str) -> tuple[tl.HookedTransformer, GPT2LMHeadModel]:
    """A HookedTransformer with the GPT-2 folder's weights, unprocessed, and the HF model itself."""
    hf = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    c = hf.config
    cfg = tl.HookedTransformerConfig(
        **{tl_name: getattr(c, hf_name) for tl_name, hf_name in GPT2_TO_TL.items()},
        d_head=c.n_embd // c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd,
        normalization_type="LN",
        positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False,
        use_attn_result=True,  # auto-circuit: one source node per head
        use_split_qkv_input=True,  # ... and separate q/k/v destinations per head
        use_hook_mlp_in=True,
        seed=0,
    )
    model = tl.HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    return model.eval(), hf


def task_metric(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """`[n]`: the task's metric as rama defines it, from full logits `[n, pos, d_vocab]`."""
    half = batch.get("half")
    return sliced_metric(logits[:, half : 2 * half] if half else logits[:, -1], batch)


def parity(
    model: tl.HookedTransformer, hf: GPT2LMHeadModel, batches: list[dict[str, Any]]
) -> dict[str, float]:
    """TL against HF logits on every clean and corrupted prompt, and the metric against rama's."""
    logit_diff, metric_diff, metrics = 0.0, 0.0, []
    with torch.no_grad():
        for batch in batches:
            for tokens in (batch["clean"], batch["corrupted"]):
                logit_diff = max(logit_diff, float((model(tokens) - hf(tokens).logits).abs().max()))
            metric = task_metric(model(batch["clean"]), batch)
            metric_diff = max(metric_diff, float((metric - batch["metric"]).abs().max()))
            metrics.append(metric)
    return {
        "tl_vs_hf_max_abs_logit_diff": logit_diff,
        "metric_vs_rama_max_abs_diff": metric_diff,
        "metric_clean_mean": float(torch.cat(metrics).mean()),
    }


def batch_loader(patchable: Any, batch: dict[str, Any]) -> tuple[PromptDataLoader, dict[str, str]]:
    """One batch as auto-circuit's loader, the model's output slice set for its metric, and the loss.

    Induction: `logprob` + `avg_val` on positions `half … 2·half−1`, the answers being the tokens
    those positions predict. IOI: `logit` + `avg_diff` at the last position (IO against S)."""
    clean = batch["clean"]
    if "half" in batch:
        half = batch["half"]
        answers = wrong = list(clean[:, half + 1 : 2 * half + 1, None])  # per prompt [half, 1]
        patchable.out_slice = (slice(None), slice(half, 2 * half))  # the positions the metric reads
        functions = {"grad_function": "logprob", "answer_function": "avg_val"}
    else:
        answers, wrong = list(batch["io"][:, None]), list(batch["s"][:, None])
        patchable.out_slice = (slice(None), -1)  # auto-circuit's own "last_seq"
        functions = {"grad_function": "logit", "answer_function": "avg_diff"}
    dataset = PromptDataset(list(clean), list(batch["corrupted"]), answers, wrong)
    loader = PromptDataLoader(dataset, seq_len=None, diverge_idx=0, batch_size=len(clean), shuffle=False)
    return loader, functions


def auto_circuit_eap(patchable: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """auto-circuit's mask-gradient EAP on one batch (`PruneScores`: receiving module -> scores),
    loss = −(batch mean of the metric)."""
    loader, functions = batch_loader(patchable, batch)
    return mask_gradient_prune_scores(
        patchable,
        loader,
        None,
        mask_val=0.0,
        ablation_type=AblationType.RESAMPLE,
        clean_corrupt="corrupt",
        **functions,  # type: ignore[arg-type]
    )


def sliced_metric(out: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """`[b]`: the metric from the logits at the positions it reads (auto-circuit's `out_slice`).
    Induction: mean log-probability of the second copy, tokens `half+1 … 2·half`, predicted at
    `half … 2·half−1`; IOI: logit(IO) − logit(S) at the last position."""
    if "half" in batch:
        half = batch["half"]
        predicted = out.log_softmax(-1)  # [b, half, d_vocab]
        return predicted.gather(-1, batch["clean"][:, half + 1 :, None])[..., 0].mean(-1)
    rows = torch.arange(out.shape[0])
    return out[rows, batch["io"]] - out[rows, batch["s"]]  # out: [b, d_vocab] at the last position


def circuits(
    patchable: Any, batches: list[dict[str, Any]], scores: dict[str, torch.Tensor], sizes: list[int]
) -> dict[int, dict[str, Any]]:
    """For each size k: auto-circuit's circuit of the k edges of largest |score| (its `run_circuits`
    with `TREE_PATCH`: every other edge reads the corrupted prompt's value), the metric's mean over
    all prompts with it, and its edges."""
    ranked = sorted(patchable.edges, key=lambda e: -abs(float(e.prune_score(scores))))
    totals: dict[int, float] = dict.fromkeys(sizes, 0.0)
    for batch in batches:
        loader, _ = batch_loader(patchable, batch)
        outputs = run_circuits(patchable, loader, sizes, scores, PatchType.TREE_PATCH, AblationType.RESAMPLE)
        assert sorted(outputs) == sorted(sizes), f"tied scores: kept {sorted(outputs)} for {sizes}"
        for k, by_key in outputs.items():
            (out,) = by_key.values()
            totals[k] += float(sliced_metric(out, batch).sum())
    n = sum(len(b["clean"]) for b in batches)
    return {k: {"metric": totals[k] / n, "edges": [e.name for e in ranked[:k]]} for k in sizes}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", required=True, help="a Hugging Face GPT-2 folder")
    parser.add_argument("--inputs", required=True, help="the task tensors written by eap_crosscheck.py")
    parser.add_argument("--out", required=True, help="where to write the scores (.pt)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="circuit sizes to run with patching")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    batches = torch.load(args.inputs, weights_only=True)["batches"]
    model, hf = tl_from_hf(args.model_dir)
    checks = parity(model, hf, batches)
    patchable = patchable_model(model, factorized=True, slice_output=None, separate_qkv=True, seq_len=None)
    started = time.perf_counter()
    per_batch = [auto_circuit_eap(patchable, batch) for batch in batches]
    seconds = time.perf_counter() - started
    n = sum(len(b["clean"]) for b in batches)
    total = {  # the mean over prompts (up to sign) ranks the circuits: batches weighted by their size
        module: sum(
            len(b["clean"]) / n * scores[module] for b, scores in zip(batches, per_batch, strict=True)
        )
        for module in per_batch[0]
    }
    named = [{e.name: float(e.prune_score(scores)) for e in patchable.edges} for scores in per_batch]
    versions = {
        name: importlib.metadata.version(name)
        for name in ("auto-circuit", "transformer-lens", "transformers", "torch")
    }
    result = {"scores": named, "checks": checks, "seconds": seconds, "versions": versions}
    result["circuits"] = circuits(patchable, batches, total, args.sizes)
    torch.save(result, args.out)


if __name__ == "__main__":
    main()
