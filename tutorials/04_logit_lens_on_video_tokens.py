# %% [markdown]
# # 04 · Logit lens on video tokens
#
# The logit lens reads the residual stream at an intermediate layer through the final norm and
# the unembedding, as if the model stopped there. Two readings matter for a Video LLM:
#
# 1. at the **last position**: when does the answer letter become the prediction?
#    (`option_probabilities_by_layer`, the "generation probability by layer" of the paper);
# 2. at the **video tokens**: which words do the video tokens "mean" at each layer? Do they
#    drift towards object words (colours, shapes) or towards temporal words (directions,
#    changes) as they go up? (`video_token_top_k`, the vocabulary by layer bin, the per-frame
#    token grid).
#
# Runs on the built-in model on CPU in under a minute. Definitions: `docs/methods.md`.

# %%
import json

import plotly.express as px
import plotly.graph_objects as go
import torch

import tl_video
from tl_video.analyses import LensOptions, LensResult, run_lens
from tl_video.data import generate_benchmark
from tl_video.interventions import option_probabilities_by_layer, video_token_top_k
from tl_video.plots.lens import answer_probability, token_grid, vocabulary_bars
from tl_video.prompts import prepare_example
from tl_video.prompts.answers import option_token_ids
from tutorial_figures import fresh_dir, output_dir, show

torch.set_grad_enabled(False)
OUT = output_dir()
model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
examples = generate_benchmark(OUT / "bench", n_per_task=2, seed=0)
example = examples[0]
prepared = prepare_example(model, example)
letters = option_token_ids(model.tokenizer, prepared)
print(example.question, "true:", example.answer_letter)

# %% [markdown]
# ## Answer probability by layer
#
# softmax(W_U · ln_final(h_l)) at the last position after every layer, for each option letter.
# `paper_compat=True` reads the raw residual for L1 … L(n−1) instead, as the reference code did
# (its last row equals the model's own output).

# %%
order, probabilities = option_probabilities_by_layer(model, prepared, letters)  # [layer, option]
_, paper = option_probabilities_by_layer(model, prepared, letters, paper_compat=True)
fig = go.Figure()
for i, letter in enumerate(order):
    style = dict(width=3) if letter == example.answer_letter else dict(dash="dot")
    fig.add_scatter(x=[f"L{l + 1}" for l in range(model.cfg.n_layers)], y=probabilities[:, i].tolist(), name=f"({letter})", line=style)
fig.update_layout(title="p(option letter) read from each layer (final norm + W_U)", yaxis_title="probability", width=650, height=350)
show(fig, "04_answer_probability_by_layer")
first_layer = next((l for l in range(model.cfg.n_layers) if order[int(probabilities[l].argmax())] == example.answer_letter), None)
print("the true letter first leads at", f"L{first_layer + 1}" if first_layer is not None else "no layer")

# %% [markdown]
# ## What the video tokens read as
#
# `video_token_top_k` projects every video token at every layer onto the vocabulary and keeps the
# top k. `top_ids` is [layer, video_token, k]; `video_grid` gives each token's (frame, row, col).

# %%
lens = video_token_top_k(model, prepared, k=5)
print(lens.probes, tuple(lens.top_ids.shape))
top1 = [[model.tokenizer.decode([int(i)]).strip() for i in row[:, 0]] for row in lens.top_ids]  # [layer][video_token]
for layer, words in enumerate(top1):
    print(f"{lens.points[layer]:>14}:", " ".join(f"{w:>8}" for w in words))

# %% [markdown]
# A toy model with a 490-token vocabulary has few words to offer: its video tokens mostly read as
# option letters, punctuation or template words. On a 7B checkpoint the same call shows object
# and action words appearing in the middle layers (the paper's finding); the code is identical.
#
# The same table as a heatmap of top-1 probability, labelled with the top-1 word, frames on the x axis.

# %%
frames = [f"f{frame} r{row} c{col}" for frame, row, col in lens.video_grid]
fig = px.imshow(lens.top_probabilities[:, :, 0].numpy(), x=frames, y=list(lens.points), aspect="auto",
                color_continuous_scale="Blues", labels=dict(color="top-1 p"))
fig.update_traces(text=top1, texttemplate="%{text}")
fig.update_layout(title=f"Top-1 token of each video token ({example.example_id})", width=800, height=380)
show(fig, "04_video_token_top1")

# %% [markdown]
# ## Over a dataset: vocabulary by layer bin and the per-frame grid
#
# `run_lens` does this for every correctly answered example and writes records. The vocabulary
# figure counts how often the video tokens' top-1 tokens are spatial keywords (colours, shapes)
# or temporal keywords (directions, changes) in bins of layers (1 layer per bin on this 6-layer
# model, 5 on a 32-layer one). The token grid draws the top-1 token over each frame.

# %%
result = run_lens(model, examples, LensOptions(seed=0), out_dir=fresh_dir("lens_run"), progress=False)
result = LensResult.read(OUT / "lens_run")
print(result.baseline())
for finding in result.findings():
    print("-", finding)
spatial, temporal = result.vocabulary("spatial"), result.vocabulary("temporal")
show(vocabulary_bars(result, "spatial"), "04_vocabulary_spatial")
show(vocabulary_bars(result, "temporal"), "04_vocabulary_temporal")
show(token_grid(result), "04_token_grid")
show(answer_probability(result), "04_pipeline_answer_probability")

fractions = {kind: result.keyword_fraction_per_example(kind).mean(0).tolist() for kind in ("spatial", "temporal")}
summary = {
    "letters": order, "probabilities_last_layer": probabilities[-1].tolist(),
    "paper_compat_last_equals_default": bool(torch.allclose(paper[-1], probabilities[-1], atol=1e-5)),
    "top1_last_layer": top1[-1], "n_lens_records": len(result.lens_records()), "keyword_fraction_by_bin": fractions,
    "bins": result.bin_labels,
}
(OUT / "04_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
