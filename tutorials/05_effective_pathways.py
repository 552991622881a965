# %% [markdown]
# # 05 · Effective pathways
#
# The information-flow curves (tutorial 03) say *in which layers* each flow matters. The
# effective-pathway experiment turns that around: keep **only** those flows, only in those
# layers, block every other edge of the pathway graph, and ask whether the model still answers.
# If it does while a *random* blocking of as many edges breaks it, the pathways found are
# sufficient, not just necessary. (Map the Flow, section on effective pathways; every rule is in
# `docs/methods.md`, "Effective pathways".)
#
# Steps: choose the ranges (from flow curves, or by hand) · build the spec · count edges ·
# the random baseline · run over a dataset. Runs on the built-in model on CPU in about a minute.

# %%
import json

import plotly.express as px
import torch

import tl_video
from tl_video.analyses import FlowOptions, PathwayOptions, PathwayResult, effective_ranges, knockout_probabilities, run_flow, run_pathways
from tl_video.data import generate_benchmark
from tl_video.interventions import KnockoutSpec, blocked_edges_by_layer, edge_counts, effective_pathway_spec, random_baseline_for
from tl_video.plots.pathways import edges_vs_accuracy, pathway_table
from tl_video.prompts import prepare_example
from tl_video.prompts.answers import option_token_ids
from tutorial_figures import fresh_dir, output_dir, show

torch.set_grad_enabled(False)
OUT = output_dir()
model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
n_layers = model.cfg.n_layers
examples = generate_benchmark(OUT / "bench", n_per_task=2, seed=0)

# %% [markdown]
# ## Choosing the ranges
#
# Sweep the three flows the pathways are made of ("No cross-frame interactions", "Video↛Question",
# "Question↛Last") with a window of layers around each centre layer, then apply the rule: group
# centre layers in bins (1 layer per bin on this 6-layer model, 5 of 32 on a 7B), and call a bin
# effective when blocking there lowers p(true option) by more than 5% on average.

# %%
flow = run_flow(model, examples, FlowOptions(presets=("cross-frame", "vql-to-ql"), seed=0), out_dir=fresh_dir("flow_run"), progress=False)
found = effective_ranges(flow)
for label, layers in found.items():
    print(f"{label:30} effective at", [f"L{layer + 1}" for layer in layers])

# %% [markdown]
# `run_pathways(..., flow_result=flow)` applies exactly this rule. You can also give ranges by hand,
# as 0-indexed lists or 1-indexed prose: `PathwayOptions(video_to_question="L2-4", ...)`. A flow
# whose curve never crosses the threshold gets no range; the cross-frame range may be empty
# (cross-frame edges then blocked in every layer), the other two must name a layer.

# %%
ranges = {
    "cross_frame": found["No cross-frame interactions"],
    "video_to_question": found["Video↛Question"] or [0],
    "question_to_last": found["Question↛Last"] or [n_layers - 1],
}
print({name: [f"L{layer + 1}" for layer in layers] for name, layers in ranges.items()})

# %% [markdown]
# ## The spec, and what it blocks
#
# `effective_pathway_spec` builds a `KnockoutSpec` from the ranges for one input's layout.
# `blocked_edges_by_layer` shows the [query, key] matrix of removed edges in each layer.

# %%
example = examples[0]
prepared = prepare_example(model, example)
layout = prepared.layout
spec = effective_pathway_spec(layout, n_layers, **ranges)
print(spec)

blocked = blocked_edges_by_layer(spec, layout, n_layers)
labels = [f"{i}:{s}" for i, s in enumerate(model.to_str_tokens(prepared.tokens))]
late = max(blocked)
fig = px.imshow(blocked[late].int().numpy(), x=labels, y=labels, color_continuous_scale=["white", "#D55E00"],
                labels=dict(x="key", y="query", color="blocked"))
fig.update_layout(title=f"Edges removed in L{late + 1} by the effective-pathway spec", width=760, height=760, coloraxis_showscale=False)
fig.update_xaxes(tickfont_size=6, tickangle=-90).update_yaxes(tickfont_size=6)
show(fig, "05_blocked_edges")

# %% [markdown]
# (A block may list pairs above the diagonal, e.g. video↛video covers the whole square; causality
# masks those anyway, and the edge count below ignores them.)
#
# ## Edge accounting
#
# Edges are counted over the causal triangle, N(N+1)/2 pairs per layer for N tokens; "kept" are the
# pairs left unmasked. A pair above the diagonal is already masked by causality and never counts.

# %%
edges = edge_counts(spec, layout, n_layers)
print(edges)
print("suppressed per layer:", edges.suppressed_per_layer)
assert edges.kept + edges.suppressed == n_layers * layout.n_tokens * (layout.n_tokens + 1) // 2

# %% [markdown]
# ## The random baseline
#
# `random_baseline_for` blocks, in every layer, exactly as many causal pairs as the pathway spec
# suppresses there, drawn uniformly among pairs whose query and key are at or after the first video
# token (seeded). Keeping every flow in every layer blocks nothing: the model's own output.

# %%
random_spec = random_baseline_for(spec, layout, n_layers, seed=0)
assert edge_counts(random_spec, layout, n_layers).suppressed_per_layer == edges.suppressed_per_layer
everything = effective_pathway_spec(layout, n_layers, *[range(n_layers)] * 3, video_to_last=range(n_layers), last_to_last=range(n_layers))
assert not everything.blocks  # ranges covering every layer give the empty spec

letters = option_token_ids(model.tokenizer, prepared)
full, pathways, random = knockout_probabilities(model, prepared, [KnockoutSpec(), spec, random_spec])
for name, p in [("full attention", full), ("effective pathways", pathways), ("random blocking", random)]:
    answer = max(letters, key=lambda letter: p[letters[letter]])
    print(f"{name:20} answers {answer} (true {example.answer_letter}), p(true) = {p[letters[example.answer_letter]]:.3f}")

# %% [markdown]
# ## Over a dataset
#
# `run_pathways` does this for every correctly answered example: one record per example and
# condition, with the answer, the edges and the spec; `PathwayResult` gives accuracy with its
# denominator and the edge fractions.

# %%
result = run_pathways(model, examples, PathwayOptions(seed=0), flow_result=flow, out_dir=fresh_dir("pathways_run"), progress=False)
result = PathwayResult.read(OUT / "pathways_run")
for finding in result.findings():
    print("-", finding)
show(pathway_table(result), "05_pathway_table")
show(edges_vs_accuracy(result), "05_edges_vs_accuracy")

# %% [markdown]
# ## Tighter ranges, by hand
#
# The rule can return wide ranges (on this toy model Question→Last matters in every layer, so the
# found pathways keep most edges and the random baseline blocks too few edges to hurt). Giving
# narrower ranges by hand shows the other side: fewer edges kept, and whether the answer survives.

# %%
tight_options = PathwayOptions(cross_frame="L1-2", video_to_question="L2-3", question_to_last="L4-6", seed=0)
tight = run_pathways(model, examples, tight_options, out_dir=fresh_dir("pathways_tight"), progress=False)
for condition in ("full_attention", "pathways", "random"):
    print(f"{condition:15} accuracy {tight.accuracy(condition)}; edges kept {tight.edges(condition).kept_percent:.1f}%")
show(edges_vs_accuracy(tight), "05_edges_vs_accuracy_tight")

# %%
accuracy = {condition: result.accuracy(condition) for condition in ("full_attention", "pathways", "random")}
summary = {
    "ranges": {k: list(v) for k, v in ranges.items()}, "kept_fraction": edges.kept_fraction,
    "suppressed_per_layer": list(edges.suppressed_per_layer),
    "accuracy": {k: [a.n_correct, a.n] for k, a in accuracy.items()},
    "tight_accuracy": {c: [tight.accuracy(c).n_correct, tight.accuracy(c).n] for c in ("full_attention", "pathways", "random")},
    "tight_kept_percent": tight.edges("pathways").kept_percent,
    "p_true_single_example": {"full": full[letters[example.answer_letter]].item(),
                              "pathways": pathways[letters[example.answer_letter]].item(),
                              "random": random[letters[example.answer_letter]].item()},
}
(OUT / "05_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
