"""The IOI toy: accuracy on held-out name pairs, the heads its ground truth names, and a figure of what
every head does (attention END→IO / END→S2, direct effect, mean-ablation cost).
Writes docs/toys/ioi-heads.png. Run: python examples/ioi.py
"""

from __future__ import annotations

import torch

import rama
from rama.plotting import pyplot, save_figure
from rama.toys import load_ground_truth, pretrained
from rama.toys.ioi import IOITask, accuracy

model = rama.load(pretrained("ioi"))
truth = load_ground_truth(pretrained("ioi"))
task = IOITask()
prompts = task.prompts(1000, "test", torch.Generator().manual_seed(1))
print(
    f"accuracy on 1,000 prompts over held-out name pairs: {accuracy(model.hf, model.tokenizer, prompts, task):.3f}"
)
print(f"mean logit difference (IO − S) in the ground truth: {truth['logit_difference']:.2f}")
for role, heads in truth["heads"].items():
    print(f"{role:16s} {heads}   ({truth['role_rules'][role]})")

panels = {
    "attention END→IO": truth["attention"]["END->IO"],
    "attention END→S2": truth["attention"]["END->S2"],
    "direct effect on logit diff": truth["direct_effect"],
    "mean-ablation cost": truth["mean_ablation_effect"],
}
plt = pyplot()
figure, axes = plt.subplots(1, 4, figsize=(17, 3.8))
figure.subplots_adjust(wspace=0.45, top=0.8)
for axis, (title, values) in zip(axes, panels.items(), strict=True):
    grid = torch.tensor(values)
    image = axis.imshow(grid.numpy(), cmap="viridis", aspect="auto")
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    axis.set_xticks(range(grid.shape[1]))
    axis.set_yticks(range(grid.shape[0]))
    middle = float(grid.min() + grid.max()) / 2
    for layer in range(grid.shape[0]):
        for head in range(grid.shape[1]):
            value = float(grid[layer, head])
            colour = "black" if value > middle else "white"
            axis.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=axis, fraction=0.046)
figure.suptitle(
    "IOI toy: what each head does (S-inhibition 0.1 attends END→S2; name movers 1.0, 1.2, 1.3 write IO)"
)
save_figure(figure, "docs/toys/ioi-heads.png")
print("wrote docs/toys/ioi-heads.png")
