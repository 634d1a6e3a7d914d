"""A corpus written by SmolLM2-135M-Instruct itself, for SAEs whose features should match the model's
own modern prose rather than the built-in corpus's Bible, Shakespeare and WordNet.

Each document answers one chat request ("Write a short paragraph about X.", "Tell me a short story about X.",
...) whose topic X is a common English noun: a WordNet noun lemma (Debian `wordnet-base`) that occurs
at least once in WordNet's sense-tagged text. Topics and templates are drawn at random (seeded per
batch), answers are sampled (temperature 1, top-p 0.95), and only the answer is kept. The concept
keyword lists and prompts of `examples/steering.py` play no part.

    python examples/generated_corpus.py --out answers.jsonl --tokens 330000
    rama sae train --corpus answers.jsonl --harvest-tokens 290000 --site blocks.12.hook_resid_post ...

SmolLM2 writes ≈ 140 tokens/s on this 2-core CPU (40 min for 330 k tokens), so the corpus is far smaller
than the built-in one; an SAE then trains in epochs over it (`--harvest-tokens` below `--tokens`).

The file is appended one complete batch at a time, so a stopped run resumes where it was: rerun the
same command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import torch
from tqdm import tqdm

import rama
from rama.atomic import write_text
from rama.data.fetch import fetch_debian
from rama.paths import cache_root

TEMPLATES = [
    "Write a short paragraph about {topic}.",
    "Tell me a short story about {topic}.",
    "Describe {topic} to a friend.",
    "What do you think about {topic}?",
    "Write a diary entry that mentions {topic}.",
    "Explain {topic} in simple words.",
    "Write a letter about {topic}.",
    "Share a memory involving {topic}.",
]


def common_nouns(min_tagged_senses: int = 1) -> list[str]:
    """Alphabetic WordNet noun lemmas with at least `min_tagged_senses` senses seen in tagged text."""
    folder = fetch_debian("wordnet-base", cache_root() / "sources")
    nouns = []
    with open(folder / "usr/share/wordnet/index.noun", encoding="utf-8") as index:
        for line in index:
            if line.startswith(" "):
                continue  # the licence header
            fields = line.split()
            pointer_count = int(fields[3])
            tagged = int(fields[5 + pointer_count])
            if tagged >= min_tagged_senses and fields[0].isalpha():
                nouns.append(fields[0])
    return nouns


def chat_prompts(tokenizer: object, nouns: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    requests = [rng.choice(TEMPLATES).format(topic=rng.choice(nouns)) for _ in range(count)]
    return [
        tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True
        )
        for request in requests
    ]


def answers(model: rama.HookedModel, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int]:
    """Sampled answers (prompt and special tokens removed) and how many tokens they hold."""
    tokenizer = model.tokenizer
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.hf.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    texts = [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    kept = [text for text in texts if len(text) > 40]
    return kept, int((new_tokens != tokenizer.pad_token_id).sum())


def done_batches(path: Path) -> tuple[int, int]:
    """Batches already written and their generated tokens. A batch cut short by a stopped run (a partial
    line, or fewer lines than it records) is dropped, so the file holds whole batches only."""
    if not path.exists():
        return 0, 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    written = len(lines)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    records = [json.loads(line) for line in lines]
    if records:
        last = records[-1]["batch"]
        tail = [r for r in records if r["batch"] == last]
        if len(tail) < tail[0]["batch_lines"]:
            records = records[: len(records) - len(tail)]
            lines = lines[: len(records)]
    if len(lines) != written:
        write_text(path, "".join(lines))
    counted = {r["batch"]: r["batch_tokens"] for r in records}
    return (max(counted) + 1 if counted else 0), sum(counted.values())


def append_batch(path: Path, texts: list[str], batch: int, batch_tokens: int) -> None:
    records = [
        {"text": t, "batch": batch, "batch_tokens": batch_tokens, "batch_lines": len(texts)} for t in texts
    ]
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the .jsonl file to write (or resume)")
    parser.add_argument("--tokens", type=int, default=330_000, help="generated tokens to reach")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.out.suffix != ".jsonl":
        raise SystemExit(f"--out must name a .jsonl file, not {str(args.out)!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nouns = common_nouns()
    print(f"{len(nouns)} topic nouns, e.g. {random.Random(args.seed).sample(nouns, 8)}")
    model = rama.load("smollm2-135m")
    model.tokenizer.padding_side = "left"
    batch, tokens = done_batches(args.out)
    bar = tqdm(total=args.tokens, initial=tokens, unit="tok", desc="generate")
    while tokens < args.tokens:
        batch_seed = args.seed * 1_000_003 + batch
        torch.manual_seed(batch_seed)
        prompts = chat_prompts(model.tokenizer, nouns, args.batch_size, seed=batch_seed)
        texts, batch_tokens = answers(model, prompts, args.max_new_tokens)
        append_batch(args.out, texts, batch, batch_tokens)
        batch, tokens = batch + 1, tokens + batch_tokens
        bar.update(batch_tokens)
    bar.close()
    print(f"{args.out}: {batch} batches, {tokens} generated tokens")


if __name__ == "__main__":
    main()
