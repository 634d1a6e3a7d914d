"""The induction toys: the 2-layer model copies, the 1-layer one cannot; which heads do it.
Writes docs/toys/induction-curves.png. Run: python examples/induction.py
"""

from __future__ import annotations

import json

import rama
from rama.toys import load_ground_truth, pretrained
from rama.toys.figures import plot_training_curves

curves = {}
for name in ("induction-2l", "induction-1l"):
    truth = load_ground_truth(pretrained(name))
    curves[name] = json.loads((pretrained(name) / "training_curve.json").read_text())
    print(
        f"{name}: loss on repeated tokens {truth['loss_repeated']:.3f} (uniform guess {truth['loss_uniform']:.2f})"
    )
truth = load_ground_truth(pretrained("induction-2l"))
print(
    "previous-token heads:", truth["heads"]["previous_token"], "induction heads:", truth["heads"]["induction"]
)
print("loss increase when zeroing each role:", truth["role_ablation_loss_increase"])

model = rama.load(pretrained("induction-2l"))
logits, cache = model.run_with_cache(
    "w1 w7 w3 w9 w1 w7 w3", names="blocks.1.attn.hook_pattern"
)  # <bos> is added
layer, head = truth["heads"]["induction"][0]
row = cache["blocks.1.attn.hook_pattern"][0, head, -1]  # the last 'w3' looks at the 'w9' after the first 'w3'
print(
    f"head {layer}.{head} at the last token attends most to position {int(row.argmax())}: "
    f"{model.to_str_tokens('w1 w7 w3 w9 w1 w7 w3')[int(row.argmax())]!r}; predicts "
    f"{model.to_string([int(logits[0, -1].argmax())])!r}"
)
plot_training_curves(
    curves,
    "loss_repeated",
    "docs/toys/induction-curves.png",
    "Induction: loss on the repeated tokens while training",
    "loss (nats), held-out sequences",
)
print("wrote docs/toys/induction-curves.png")
