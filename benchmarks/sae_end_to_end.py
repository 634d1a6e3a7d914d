"""Text to trained SAE, end to end, on SmolLM2-135M: rama (streaming and in-memory) against SAELens's
runner and sparsify's trainer, on the same corpus and token budget, in one run.

    python benchmarks/sae_end_to_end.py [--tokens 204800] [--layer 6] [--width 9216] [--k 32]

Each trainer does its own harvesting (SAELens stops after the hooked layer; sparsify runs the whole
model) with its own default recipe (rama: `train` defaults; SAELens: its runner's config defaults;
sparsify: its Trainer's defaults, ScheduleFree SignSGD). The timed span is the same for every
library: from a local JSONL corpus (the peers' written before the clock starts; rama's is its
built-in corpus's documents.jsonl, also built before) through tokenizing, harvesting and training
to the saved SAE. No library evaluates inside the span: SAELens's runner evaluates only when it logs
to wandb (off here), sparsify not at all, and rama is run with `eval_tokens=0` (its default held-out
evaluation, ~4 full-model passes, is `rama sae eval` work). Prints tokens/s and the ratio of rama
to the faster peer. Peers are skipped when not installed (see sae_step.py for the venv); SAELens needs a
hand-built HookedTransformer config for SmolLM2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import rama
from peer_harness import machine, table
from rama.activations import HarvestConfig, stream_harvest_tokens
from rama.atomic import write_text
from rama.data import iter_documents
from rama.models.loading import models_cache
from rama.models.sites import block_site
from rama.sae import TrainConfig, train
from rama.sae.topk import this_cpu_native_bf16


def corpus_file(folder: Path, n_documents: int = 800) -> Path:
    """A local JSONL slice of the built-in corpus that every library can read."""
    path = folder / "corpus.jsonl"
    with open(path, "w") as handle:
        for i, text in enumerate(iter_documents(None, shuffle_seed=0)):
            if i == n_documents:
                break
            handle.write(json.dumps({"text": text}) + "\n")
    return path


def run_rama(model: Any, args: Any, work: Path, stream: bool, select_dtype: str = "float32") -> float:
    config = TrainConfig.create(
        architecture="topk",
        d_sae=args.width,
        k=args.k,
        select_dtype=select_dtype,
        total_tokens=args.tokens,
        batch_size=4096,
        progress=False,
    )
    harvest = HarvestConfig(
        tokens=stream_harvest_tokens(args.tokens, 4096) if stream else args.tokens,
        progress=False,
        batch_size=32,
        context_size=128,
    )
    out = work / f"rama-{'stream' if stream else 'memory'}-{select_dtype}"
    start = time.perf_counter()
    train(
        model,
        block_site(args.layer, "hook_resid_post"),
        out,
        config=config,
        harvest_config=harvest,
        eval_tokens=0,  # no held-out evaluation, as for the peers (see the docstring)
        stream=stream,
    )
    return args.tokens / (time.perf_counter() - start)


def hooked_transformer(hf_model: Any) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    cfg = HookedTransformerConfig(
        n_layers=30,
        d_model=576,
        d_head=64,
        n_heads=9,
        n_key_value_heads=3,
        d_mlp=1536,
        d_vocab=49152,
        n_ctx=2048,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=64,
        rotary_base=100000,
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        final_rms=True,
        original_architecture="LlamaForCausalLM",
        tokenizer_name=None,
        eps=1e-5,
        device="cpu",
    )
    model = HookedTransformer(cfg)
    model.load_state_dict(convert_llama_weights(hf_model, cfg), strict=False)
    return model


def run_saelens(hf_model: Any, tokenizer: Any, corpus: Path, args: Any) -> float | None:
    try:
        from datasets import load_dataset
        from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
        from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
    except ImportError:
        return None
    model = hooked_transformer(hf_model)
    model.set_tokenizer(tokenizer)
    start = time.perf_counter()  # from the JSONL corpus on, as for the others
    dataset = load_dataset("json", data_files=str(corpus), split="train")
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=576, d_sae=args.width, k=args.k),
        model_name="smollm2-135m",
        hook_name=block_site(args.layer, "hook_resid_post"),
        dataset_path=str(corpus),
        is_dataset_tokenized=False,
        streaming=False,
        context_size=128,
        training_tokens=args.tokens,
        train_batch_size_tokens=4096,
        store_batch_size_prompts=32,
        n_batches_in_buffer=32,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=str(corpus.parent / "saelens-ckpt"),
        n_checkpoints=0,
        output_path=None,
        n_batches_for_norm_estimate=10,
        verbose=False,
    )
    LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
    return args.tokens / (time.perf_counter() - start)


def run_sparsify(hf_model: Any, tokenizer: Any, corpus: Path, args: Any) -> float | None:
    try:
        from datasets import load_dataset
        from sparsify import SaeConfig, Trainer
        from sparsify import TrainConfig as SparsifyConfig
        from sparsify.data import chunk_and_tokenize
    except ImportError:
        return None
    start = time.perf_counter()  # tokenizing is inside the span, as it is for rama and SAELens
    dataset = chunk_and_tokenize(
        load_dataset("json", data_files=str(corpus), split="train"), tokenizer, max_seq_len=128
    )
    n_sequences = args.tokens // 128
    dataset = dataset.select(range(min(n_sequences, len(dataset))))
    config = SparsifyConfig(
        SaeConfig(num_latents=args.width, k=args.k),
        batch_size=32,
        layers=[args.layer],
        save_dir=str(corpus.parent / "sparsify"),
        log_to_wandb=False,
    )
    Trainer(config, dataset, hf_model).fit()
    return len(dataset) * 128 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=204_800)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--width", type=int, default=9216)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--only", default=None, help="comma-separated subset: rama,saelens,sparsify")
    parser.add_argument("--results", default="benchmarks/results/sae_end_to_end.json")
    args = parser.parse_args()
    only = set((args.only or "rama,saelens,sparsify").split(","))
    work = Path(tempfile.mkdtemp(prefix="rama-e2e-"))
    before = machine()
    try:
        model = rama.load("smollm2-135m")
        corpus = corpus_file(work)
        results: dict[str, float | None] = {}
        if "rama" in only:
            results["rama, streaming (harvest thread + shuffle buffer)"] = run_rama(
                model, args, work, stream=True
            )
            results["rama, harvest then train"] = run_rama(model, args, work, stream=False)
            if this_cpu_native_bf16() is not False:  # emulated bf16 is ~100x slower: no row
                results["rama, harvest then train, select_dtype=bfloat16"] = run_rama(
                    model, args, work, stream=False, select_dtype="bfloat16"
                )
        hf = type(model.hf).from_pretrained(models_cache() / "smollm2-135m").eval()
        if "saelens" in only:
            results["SAELens LanguageModelSAETrainingRunner"] = run_saelens(hf, model.tokenizer, corpus, args)
        if "sparsify" in only:
            results["sparsify Trainer"] = run_sparsify(hf, model.tokenizer, corpus, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbefore: {before}\nafter: {machine()}")
    print(f"layer {args.layer}, {args.width} latents, k {args.k}, {args.tokens} tokens")
    print(
        table(
            ["text → trained SAE", "tokens/s"], [[n, f"{r:.0f}"] for n, r in results.items() if r is not None]
        )
    )
    peers = [r for n, r in results.items() if r is not None and not n.startswith("rama")]
    ours = [r for n, r in results.items() if r is not None and n.startswith("rama")]
    if peers and ours:
        print(f"- best rama ÷ faster peer: {max(ours) / max(peers):.2f}")
    record = {
        "machine_before": before,
        "machine_after": machine(),
        "args": vars(args),
        "tokens_per_s": results,
    }
    write_text(Path(args.results), json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
