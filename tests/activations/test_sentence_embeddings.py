"""The one sentence embedder: MiniLM mean-pooled over the mask and L2-normalised, checked against a
forward of the Hugging Face model itself (loaded from the same folder without rama)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from rama.activations.sentence_embeddings import SentenceEmbedder, sentence_embedder
from rama.errors import InputError
from rama.models.loading import resolve_model_dir

pytestmark = pytest.mark.slow  # loads MiniLM

TEXTS = [
    "A ship sailed across the sea.",
    "Flour, eggs and butter.",
    "Tax",
    "The choir sang a hymn in the old stone church at dawn.",
]


def test_the_embedder_equals_a_mean_pooled_hugging_face_forward() -> None:
    folder = resolve_model_dir("minilm-l6")
    tokenizer = tf.AutoTokenizer.from_pretrained(folder)
    model = tf.AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded: the mask matters
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # [batch, pos, 384]
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    embed = SentenceEmbedder(sentence_embedder().encoder, batch_size=3)  # batches sorted by length
    got = embed(TEXTS)
    assert got.shape == (4, 384) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(4))
    one_at_a_time = torch.cat([embed([text]) for text in TEXTS])
    torch.testing.assert_close(one_at_a_time, got, atol=2e-5, rtol=0)


def test_long_texts_are_cut_at_256_word_pieces_and_bad_input_is_refused() -> None:
    embed = sentence_embedder()
    words = " ".join(f"word{i}" for i in range(400))  # ≫ 256 word pieces, past the model's 512 too
    cut = embed.encoder.tokenizer.decode(embed.encoder.tokenizer(words)["input_ids"][1:255])
    torch.testing.assert_close(embed([words]), embed([cut]), atol=2e-5, rtol=0)
    assert embed([]).shape == (0, 384)
    with pytest.raises(InputError, match=r"not one string: embedder\(\[text\]\)"):
        embed("one string")
