"""One model shared by threads that each run different hooks: every call gives what it gives alone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from rama.hooks import HookedModel, HookPoint
from tiny_models import hooked, random_tokens

THREADS_PER_JOB = 2
ITERATIONS = 6


def zero_head_1(z: torch.Tensor, hook: HookPoint) -> torch.Tensor:
    z = z.clone()
    z[:, :, 1] = 0.0
    return z


def add_vector(resid: torch.Tensor, hook: HookPoint) -> torch.Tensor:
    return resid + torch.linspace(-1.0, 1.0, resid.shape[-1])


def jobs(model: HookedModel, tokens: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """Seven different uses of the same HF model, each returning every tensor it produced; one goes
    through a second `HookedModel` wrapping the same HF model (the lock belongs to the HF model)."""
    other = HookedModel(model.hf, model.tokenizer)

    def patterns() -> list[torch.Tensor]:
        logits, cache = model.run_with_cache(tokens, "blocks.*.attn.hook_pattern")
        assert logits is not None
        return [logits, *cache.values()]

    def nested() -> list[torch.Tensor]:  # a cache inside a hooks() block, same thread: re-entrant
        with model.hooks([("blocks.1.hook_resid_pre", add_vector)]):
            logits, cache = model.run_with_cache(tokens, "blocks.1.hook_mlp_out")
        assert logits is not None
        return [logits, cache["blocks.1.hook_mlp_out"]]

    return {
        "ablate": lambda: [model.run_with_hooks(tokens, [("blocks.0.attn.hook_z", zero_head_1)])],
        "steer": lambda: [model.run_with_hooks(tokens, [("blocks.1.hook_resid_pre", add_vector)])],
        "patterns": patterns,
        "nested": nested,
        "plain": lambda: [model(tokens)],
        "other wrapper": lambda: [other.run_with_hooks(tokens, [("blocks.0.hook_mlp_out", add_vector)])],
        "generate": lambda: [
            model.generate(tokens[:1], 5, fwd_hooks=[("blocks.0.hook_resid_post", add_vector)])
        ],
    }


def test_threads_running_different_hooks_each_get_their_lone_result() -> None:
    _, model = hooked("llama")
    tokens = random_tokens(batch=2, pos=10)
    work = jobs(model, tokens)
    with torch.no_grad():
        alone = {name: job() for name, job in work.items()}
    assert not torch.equal(alone["ablate"][0], alone["plain"][0])  # the hooks do change the numbers
    assert not torch.equal(alone["steer"][0], alone["plain"][0])
    start = threading.Barrier(len(work) * THREADS_PER_JOB)
    results: dict[str, list[Any]] = {name: [] for name in work}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            start.wait()
            with torch.no_grad():
                for _ in range(ITERATIONS):
                    results[name].append(work[name]())
        except BaseException as error:  # reported below, with the thread's job named
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(name,)) for name in work for _ in range(THREADS_PER_JOB)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for name, runs in results.items():
        assert len(runs) == THREADS_PER_JOB * ITERATIONS, name
        for run in runs:
            assert all(torch.equal(a, b) for a, b in zip(run, alone[name], strict=True)), name
    with torch.no_grad():
        assert torch.equal(model(tokens), alone["plain"][0])  # every hook came off
