# %% [markdown]
# # 03 · Attention knockout and information-flow curves
#
# Attention knockout removes chosen attention edges (query group ↛ key group) in chosen layers
# and measures how much the answer suffers. Sweeping a window of layers along the depth gives the
# **information-flow curves** of "Map the Flow" (Kim, Kim, Han; ICLR 2026): which flow (video →
# question, question → last position, across frames, …) matters, and where.
#
# In `tl_video` a knockout is a `KnockoutSpec` of blocks; its hooks edit the additive attention
# mask at `blocks.{l}.attn.hook_attn_mask` (the fused attention kernel keeps running), so they
# compose with `run_with_hooks`, `run_with_cache` and `generate`. Steps: one knockout by hand ·
# presets and window styles · the exact sweep engine · custom flows · gradient screening of every
# (flow, layer) at once · exact confirmation over a dataset and the paper's figure. Runs on the built-in model on CPU in about a minute. Definitions:
# `docs/methods.md`, "Attention knockout".

# %%
import json

import numpy as np
import plotly.graph_objects as go
import torch
from scipy.stats import spearmanr

import tl_video
from tl_video.analyses import FlowOptions, FlowResult, knockout_attribution, knockout_probabilities, run_flow
from tl_video.analyses.flow import USER_PRESET
from tl_video.data import generate_benchmark
from tl_video.interventions import PRESETS, WINDOW_STYLES, EdgeBlock, KnockoutSpec, edge_counts, knockout_hooks, preset, window_layers
from tl_video.plots.flow import accuracy_under_knockout, flow_curves
from tl_video.prompts import prepare_example
from tl_video.prompts.answers import option_token_ids
from tutorial_figures import fresh_dir, output_dir, show

torch.set_grad_enabled(False)
OUT = output_dir()
model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
n_layers = model.cfg.n_layers
examples = generate_benchmark(OUT / "bench", n_per_task=2, seed=0)
example = examples[0]
prepared = prepare_example(model, example)
layout = prepared.layout
true_token = option_token_ids(model.tokenizer, prepared)[example.answer_letter]

# %% [markdown]
# ## One knockout, by hand
#
# Source = keys, target = queries: `EdgeBlock(source="video", target="question", layers=...)` is
# "Video↛Question": no question token may attend to any video token in those layers. The hooks
# are ordinary TransformerLens hooks.

# %%
spec = KnockoutSpec(blocks=(EdgeBlock(source="video", target="question", layers=(1, 2, 3)),), label="Video↛Question L2-L4")
print(spec, "|", edge_counts(spec, layout, n_layers))
p_clean = model(prepared.tokens)[0, -1].softmax(-1)[true_token].item()
with model.hooks(fwd_hooks=knockout_hooks(spec, layout, n_layers)):
    p_knocked = model(prepared.tokens)[0, -1].softmax(-1)[true_token].item()
print(f"p(true option) {p_clean:.3f} -> {p_knocked:.3f} ({100 * (p_knocked - p_clean) / p_clean:+.1f}%)")

# %% [markdown]
# ## Presets and windows
#
# A preset is a named set of curves, each one spec per sweep step: `vql-to-ql` blocks Video↛Question,
# Video↛Last, Question↛Last and Last↛Last one at a time; `cross-frame` forbids every frame to attend
# to earlier frames. A window style says which layers a step at centre layer l blocks
# (`center`: k layers around l; `inverse`: all but those; `top_down`: l to the end; `bottom_up`: 0 to l).

# %%
print("presets:", list(PRESETS), "| window styles:", list(WINDOW_STYLES))
for style in WINDOW_STYLES:
    print(f"{style:10} centre L3, k=2 ->", [f"L{layer + 1}" for layer in window_layers(center=2, n_layers=n_layers, k=2, style=style)])
for s in preset("vql-to-ql", layout, window_layers(center=2, n_layers=n_layers, k=2)):
    print("  ", s)

# %% [markdown]
# ## The sweep engine
#
# `knockout_probabilities(model, prepared, specs)` returns the last position's full-vocabulary
# distribution under each spec. By default it runs the exact sweep engine: one clean pass, then
# each knockout restarts from its first blocked layer and recomputes only the positions from its
# earliest blocked query on. It equals one plain forward per spec (`engine="plain"`).

# %%
sweep = [s for centre in range(n_layers) for s in preset("vql-to-ql", layout, window_layers(center=centre, n_layers=n_layers, k=2))]
exact = knockout_probabilities(model, prepared, sweep)
plain = knockout_probabilities(model, prepared, sweep, engine="plain")
exact_equals_plain = bool(torch.allclose(exact, plain, atol=1e-5))
print(len(sweep), "knockouts; exact engine equals plain forwards:", exact_equals_plain,
      f"(max difference {(exact - plain).abs().max().item():.1e})")

# %% [markdown]
# ## Custom flows
#
# Any selectors work as a flow. E.g. does the *last* frame feed the question directly, and do the
# answer options need to see the question sentence? In the study, user flows are
# `FlowOptions(specs={"label": [(source, target), ...]})`, swept like the presets and recorded under the
# preset name `"custom"` (`tl_video.analyses.flow.USER_PRESET`).

# %%
custom = {
    "Last frame↛Question": [("frame[7]", "question")],
    "Frames 1–7↛Question": [("frame[0:7]", "question")],
    "Non-option question↛Options": [("question_without_options", "question - question_without_options")],
}
for label, edges in custom.items():
    specs = [KnockoutSpec.of(edges, window_layers(center=c, n_layers=n_layers, k=2), label=label) for c in range(n_layers)]
    change = 100 * (knockout_probabilities(model, prepared, specs)[:, true_token] - p_clean) / p_clean
    print(f"{label:30}", " ".join(f"{value:+7.1f}%" for value in change.tolist()))

# %% [markdown]
# ## Screening first: gradient knockout attribution
#
# An exact sweep costs one (partial) forward per (example, flow, centre layer): 11 curves × 32 layers
# on a 7B model. `knockout_attribution` estimates every single-layer knockout of every flow at once
# from **one forward and one backward pass per example**: a knockout changes only the blocked rows of
# the attention pattern (a softmax over fewer keys), and the gradient of the answer's log-odds with
# respect to the pattern turns that change into a first-order estimate. `screen.window(k)` sums the
# layers of each window. First order means it ignores how a knockout in one layer changes later
# layers: use it to choose what to run exactly, not instead of it.

# %%
options = FlowOptions(presets=("vql-to-ql", "cross-frame"), windows=("center", "inverse"), specs=custom, seed=0)
screen = knockout_attribution(model, examples, options, progress=False)
windowed = np.nanmean(screen.window(k=2), axis=0)  # [flow, centre], % change of p(true), first order
print("largest estimated single-layer drops:")
for label, layer, estimate in screen.ranking()[:5]:
    print(f"  {label:30} L{layer + 1}: {estimate:+.1f}%")
# Rank, don't threshold: a first-order estimate underestimates a knockout that removes most of the
# answer (p near 1 moves far from the linear regime), so flag the quarter of windows ranked lowest.
cutoff = np.nanpercentile(windowed, 25)
flagged = {(flow, centre) for f, flow in enumerate(screen.flows) for centre in range(n_layers)
           if windowed[f, centre] <= cutoff and windowed[f, centre] < 0}
print(f"flagged {len(flagged)} of {np.isfinite(windowed).sum()} (flow, centre) windows (estimate <= {cutoff:.2f}%)")

# %% [markdown]
# ## Exact confirmation over a dataset: the paper's figure
#
# `run_flow` sweeps every configured curve over every centre layer for each example the model
# answers correctly, writing one record per (example, curve, layer). The window size defaults to
# the paper's fraction of depth (9 of 32 layers; 2 on this 6-layer model). `FlowResult` gives the
# curves with bootstrap intervals, accuracy under knockout with denominators, and findings with
# their tests. `flow_curves` draws the paper's figure: % change of p(true option) per centre layer.

# %%
result = run_flow(model, examples, options, out_dir=fresh_dir("flow_run"), progress=False)
result = FlowResult.read(OUT / "flow_run")
print(result.baseline(), "| window k =", result.window_k)
for finding in result.findings():
    print("-", finding)
show(flow_curves(result, "vql-to-ql"), "03_flow_vql-to-ql_center")
show(flow_curves(result, "vql-to-ql", window="inverse"), "03_flow_vql-to-ql_inverse")
show(accuracy_under_knockout(result, "vql-to-ql"), "03_accuracy_vql-to-ql_center")
show(flow_curves(result, USER_PRESET), "03_flow_custom_center")  # user flows are recorded under the preset "custom"

# %% [markdown]
# On a large model you would confirm only the flagged windows, e.g. with
# `FlowOptions(layers=<flagged centre layers>)`; here the exact sweep of everything is cheap, so we can
# check the screen against it: every (flow, centre) window, estimated vs exact mean change.

# %%
exact = np.array([[np.nan if not np.isfinite(v) else v for v in result.curve(label, preset=preset).mean()]
                  for preset, label in screen.flows])  # [flow, centre], the same order as the screen
cells = np.isfinite(exact) & np.isfinite(windowed)
rho = float(spearmanr(windowed[cells], exact[cells]).statistic)
confirmed = {(flow, c) for (flow, c) in flagged if exact[screen.flows.index(flow), c] < -5}
missed = {(flow, c) for f, flow in enumerate(screen.flows) for c in range(n_layers)
          if exact[f, c] < -5 and (flow, c) not in flagged}
print(f"Spearman rank correlation, screen vs exact: {rho:.2f}; of {len(flagged)} flagged windows {len(confirmed)} lower "
      f"p(true) by more than 5% exactly; {len(missed)} windows that do were not flagged")
fig = go.Figure(go.Scatter(x=exact[cells], y=windowed[cells], mode="markers",
                           text=[f"{screen.flows[f][1]} @ L{c + 1}" for f, c in zip(*np.nonzero(cells))]))
fig.add_shape(type="line", x0=-100, y0=-100, x1=5, y1=5, line=dict(dash="dot", color="grey"))
fig.update_layout(title=f"Screen vs exact (k = 2 windows, Spearman ρ = {rho:.2f})", width=560, height=460,
                  xaxis_title="exact mean change of p(true), %", yaxis_title="first-order estimate, %")
show(fig, "03_screen_vs_exact")

# %% [markdown]
# ### How to read the flow figure
#
# Each line is one blocked flow; x is the centre of the blocked window, y the mean relative change
# of p(true option) over the analysed examples (0 = no effect, −100% = the answer is gone), with
# its 95% bootstrap band. A flow that matters only early shows a dip at low layers and a return to
# zero after: by then its information has already moved on. The `inverse` curves block everything
# *but* the window, so they rise where the window holds what is needed.

# %%
curves = {label: result.curve(label, preset="vql-to-ql").mean().tolist() for label in result.labels("vql-to-ql")}
summary = {"flow_curves": curves, "exact_equals_plain": exact_equals_plain, "screen_spearman": rho,
           "n_flagged": len(flagged), "n_confirmed": len(confirmed), "n_missed": len(missed), "p_clean": p_clean, "p_knocked": p_knocked,
           "baseline": result.baseline(), "window_k": result.window_k}
(OUT / "03_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
