"""A tiny feature store whose corpus holds markup, and the dashboard under a real uvicorn server.

`tiny_store(tmp_path) -> (db_path, model, sae)` builds in about a second; `served(db_path, model, sae)`
yields the base URL of the running app (127.0.0.1, a free port) and stops the server on exit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers as tf
import uvicorn
from tokenizers import Tokenizer, models, pre_tokenizers

from rama.features import BuildConfig, build
from rama.hooks.model import HookedModel
from rama.sae import SAE, SAEConfig, TopKConfig
from rama.web import create_app
from sae_helpers import perturbed
from tiny_models import VOCAB
from tiny_models import build as build_hf

SITE = "blocks.1.hook_resid_post"
# Words the corpus may hold that a page must show as text, never as markup.
MARKUP = {3: "<script>alert(1)</script>", 4: "a&amp;b", 5: '"quoted"', 6: "<b>bold</b>"}
CONFIG = BuildConfig(batch_size=8, top_k=6, context_left=3, context_right=2, logit_tokens=4, neighbours=3,
                     progress=False)  # fmt: skip


def markup_tokenizer() -> Any:
    """A word-level tokenizer: <pad> 0, <s> 1, </s> 2, the MARKUP words 3 … 6, then v7 … v96."""
    words = {i: MARKUP.get(i, f"v{i}") for i in range(3, VOCAB)}
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{word: i for i, word in words.items()}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def web_model() -> HookedModel:
    torch.manual_seed(0)
    return HookedModel(build_hf("llama"), markup_tokenizer(), name="tiny-llama")


def web_sae(seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    cfg = SAEConfig(d_in=32, d_sae=24, architecture="topk", arch=TopKConfig(k=4), hook_name=SITE,
                    model_name="tiny-llama")  # fmt: skip
    return perturbed(cfg)


def corpus_rows(rows: int = 24, positions: int = 16) -> torch.Tensor:
    """Random word ids (markup words included) after a BOS in every row."""
    tokens = torch.randint(3, VOCAB, (rows, positions), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = 1
    return tokens


def tiny_store(tmp_path: Path) -> tuple[Path, HookedModel, SAE]:
    """A feature store (24 latents, 64 neurons, 360 analysed tokens) of a tiny Llama and a tiny SAE."""
    model, sae = web_model(), web_sae()
    path = build(sae, model, tokens=corpus_rows(), out=Path(tmp_path) / "features.db", config=CONFIG)
    return path, model, sae


@contextmanager
def served(db_path: Path, model: HookedModel | None = None, sae: SAE | None = None) -> Iterator[str]:
    """The dashboard for `db_path` under uvicorn in a background thread; yields its base URL."""
    app = create_app(db_path, model=model, sae=sae)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard's uvicorn server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
