"""SAEDashboard's runner on a rama SAE, for `benchmarks/features_build.py`; run with the Python of a separate
venv holding `sae-dashboard` (and its SAELens and TransformerLens), not rama's.

    python features_build_saedash.py SAE_DIR HF_DIR TOKENS_PT

SAE_DIR is a rama SAE folder (SAELens v6 layout), HF_DIR the model saved by `save_pretrained`, TOKENS_PT a
`[rows, pos]` tensor of token ids (the rows rama analyses). TransformerLens lists no SmolLM2 among its
models, so the local folder is added to its list of names (its config converter reads a folder's
config.json); the weights come from the HF model itself (`hf_model=`), unprocessed, so the SAE sees the
activations it was trained on. The runner's decoder-norm folding, which SAELens refuses for
TopK SAEs (it changes which latents win), is skipped, so both tools summarise the same activations.
Prints one JSON line: tokens, features, seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from sae_dashboard.sae_vis_data import SaeVisConfig
from sae_dashboard.sae_vis_runner import SaeVisRunner
from sae_lens import SAE, HookedSAETransformer
from transformer_lens import loading_from_pretrained as loading
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase


def tokenizer(folder: str) -> PreTrainedTokenizerBase:
    """The saved tokenizer; its config names a class (TokenizersBackend) this venv's older transformers lacks,
    so the copy in `folder` (a scratch folder) is pointed at PreTrainedTokenizerFast first."""
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"}))
    return AutoTokenizer.from_pretrained(folder)


def main() -> None:
    sae_dir, hf_dir, tokens_file = sys.argv[1:4]
    torch.set_grad_enabled(False)
    loading.OFFICIAL_MODEL_NAMES.append(hf_dir)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    model = HookedSAETransformer.from_pretrained_no_processing(
        hf_dir, hf_model=hf, tokenizer=tokenizer(hf_dir)
    )
    sae = SAE.load_from_disk(sae_dir, device="cpu")
    print(f"loaded {sae.cfg.d_sae} latents at {sae.cfg.metadata.hook_name}", file=sys.stderr)
    # The runner always folds decoder norms into the encoder first; for a TopK SAE that changes which latents
    # win the top-k (SAELens refuses it), so it is skipped: the runner sees the SAE's own activations, as rama.
    sae.fold_W_dec_norm = lambda: None  # type: ignore[method-assign]
    tokens = torch.load(tokens_file)  # [rows, pos]
    features = list(range(sae.cfg.d_sae))
    config = SaeVisConfig(hook_point=sae.cfg.metadata.hook_name, features=features,
                          minibatch_size_features=len(features), minibatch_size_tokens=8, device="cpu")  # fmt: skip
    start = time.perf_counter()
    SaeVisRunner(config).run(encoder=sae, model=model, tokens=tokens)
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": tokens.numel(), "features": len(features), "seconds": seconds}))


if __name__ == "__main__":
    main()
