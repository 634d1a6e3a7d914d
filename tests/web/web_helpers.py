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
from html.parser import HTMLParser
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


SHARED: dict[Path, tuple[Path, HookedModel, SAE]] = {}


def shared_store(factory: Any) -> tuple[Path, HookedModel, SAE]:
    """`tiny_store` built once per test session (`factory`: pytest's tmp_path_factory); copy the
    file before writing to it."""
    base = Path(factory.getbasetemp())
    if base not in SHARED:
        SHARED[base] = tiny_store(factory.mktemp("shared-web-store"))
    return SHARED[base]


@contextmanager
def served(
    db_path: Path, model: HookedModel | None = None, sae: SAE | None = None, **options: Any
) -> Iterator[str]:
    """The dashboard for `db_path` (`options` go to `create_app`) under uvicorn in a background thread;
    yields its base URL."""
    app = create_app(db_path, model=model, sae=sae, **options)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as `rama serve` does
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


class Elements(HTMLParser):
    """Every element of `tag` whose class list holds `cls`: its attributes and its text."""

    def __init__(self, tag: str, cls: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tag, self.cls = tag, cls
        self.found: list[dict[str, Any]] = []
        self.open: list[list[Any]] = []  # [element, depth of nested same tags]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != self.tag:
            return
        for entry in self.open:
            entry[1] += 1
        values = {k: v or "" for k, v in attrs}
        if self.cls in values.get("class", "").split():
            element = {**values, "text": ""}
            self.found.append(element)
            self.open.append([element, 0])

    def handle_endtag(self, tag: str) -> None:
        if tag != self.tag:
            return
        for entry in list(self.open):
            if entry[1] == 0:
                self.open.remove(entry)
            else:
                entry[1] -= 1

    def handle_data(self, data: str) -> None:
        for element, _ in self.open:
            element["text"] += data


def elements(html: str, tag: str, cls: str) -> list[dict[str, Any]]:
    """The `tag` elements of class `cls` in `html` (attributes, and `text`: their text, unescaped)."""
    parser = Elements(tag, cls)
    parser.feed(html)
    return parser.found
