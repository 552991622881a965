# %% [markdown]
# # 07 · Attention patterns with frame-labelled tokens
#
# Attention patterns are the first thing most people look at, and with a Video LLM the first
# problem is reading the axes: hundreds of video tokens that all print as the same placeholder.
# `model.to_str_tokens(prepared.tokens)` labels each video token with where it came from:
# `<video f{frame} r{row} c{col}>` (frame, row and column of the vision grid).
#
# This tutorial draws patterns with **CircuitsVis** when it is installed
# (`pip install -e ".[circuitsvis]"`; an interactive widget in Jupyter, saved as HTML here) and always
# with a plotly heatmap whose axes carry the same labels. Then the question→video attention maps of
# the study, under a cross-frame knockout. Runs on the built-in model on CPU in under a minute.

# %%
import json

import plotly.express as px
import torch

import tl_video
from tl_video.analyses import AttentionOptions, AttentionResult, run_attention
from tl_video.data import generate_benchmark
from tl_video.interventions import EdgeBlock, KnockoutSpec, video_attention_map
from tl_video.interventions.attention_maps import query_attention_to_video
from tl_video.plots.attention import attention_maps, video_mass_by_layer
from tl_video.prompts import prepare_example
from tl_video.testing import save_tiny_llava_next_video
from tutorial_figures import fresh_dir, output_dir, show

try:
    import circuitsvis as cv
except ImportError:  # optional extra
    cv = None

torch.set_grad_enabled(False)
OUT = output_dir()
model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
examples = generate_benchmark(OUT / "bench", n_per_task=2, seed=0)
prepared = prepare_example(model, examples[0])
labels = model.to_str_tokens(prepared.tokens)
print(labels[:14])

# %% [markdown]
# The built-in model pools each frame to one token, so every label is `r0 c0`. A checkpoint with a
# spatial grid labels every cell; here a tiny random-weight LLaVA-NeXT-Video (the test-suite
# builder, 2×2 average pooling of a 4×4 patch grid) on the same video:

# %%
tiny = tl_video.HookedVideoTransformer.from_pretrained(save_tiny_llava_next_video(OUT / "tiny-llava-next-video"))
tiny_input = tiny.prepare(video=prepared.frames[:4], prompt="What moves?")
tiny_labels = tiny.to_str_tokens(tiny_input.tokens)
print([label for label in tiny_labels if label.startswith("<video")][:6], "...")

# %% [markdown]
# ## CircuitsVis
#
# `cv.attention.attention_patterns(tokens, attention)` takes the string tokens and a
# [head, query, key] pattern. In a notebook the returned object renders as an interactive widget
# (hover a token to see where it attends); we also save it as a standalone HTML file.

# %%
_, cache = model.run_with_cache(prepared.tokens)
layer = 2
pattern = cache["pattern", layer][0]  # [head, query, key]
if cv is not None:
    widget = cv.attention.attention_patterns(tokens=labels, attention=pattern)
    (OUT / "07_circuitsvis_L3.html").write_text(str(widget))
    print("CircuitsVis widget written to", OUT / "07_circuitsvis_L3.html")
else:
    widget = None
    print("CircuitsVis is not installed (pip install circuitsvis); the plotly heatmap below shows the same pattern")
widget

# %% [markdown]
# ## The same pattern as a labelled heatmap
#
# The head-mean pattern of one layer, axes labelled with `to_str_tokens`; dotted lines mark the
# video's frames, taken from the layout (`layout.positions("frame[i]")`), never from raw indices.

# %%
fig = px.imshow(pattern.mean(0).numpy() ** 0.5, x=[f"{i}:{s}" for i, s in enumerate(labels)],
                y=[f"{i}:{s}" for i, s in enumerate(labels)], color_continuous_scale="Viridis",
                labels=dict(x="key", y="query", color="√attention"))
for frame in range(prepared.layout.n_frames):
    start = int(prepared.layout.positions(f"frame[{frame}]")[0])
    fig.add_vline(x=start - 0.5, line_dash="dot", line_color="white", line_width=1)
fig.update_layout(title=f"L{layer + 1} attention, mean over heads (√ scale)", width=820, height=820)
fig.update_xaxes(tickfont_size=6, tickangle=-90).update_yaxes(tickfont_size=6)
show(fig, "07_pattern_heatmap")

# %% [markdown]
# ## Where does the question look in the video?
#
# `video_attention_map(model, prepared, query)` averages the attention of a query group (any
# selector) to every video token, per layer, on the (frame, row, col) grid. With `knockout=` the
# same map is read under a knockout: here, no frame may attend to an earlier frame in L1–L2.

# %%
maps = video_attention_map(model, prepared, "question_without_options")  # [layer, frame, row, col]
cross_frame = KnockoutSpec(blocks=tuple(
    EdgeBlock(source=f"frame[0:{f}]", target=f"frame[{f}]", layers=(0, 1)) for f in range(1, prepared.layout.n_frames)
), label="no cross-frame L1-L2")
knocked = video_attention_map(model, prepared, "question_without_options", knockout=cross_frame)
per_frame = maps.flatten(2).nansum(-1)  # [layer, frame]
fig = px.imshow(torch.stack([per_frame, knocked.flatten(2).nansum(-1)]).numpy(), facet_col=0, aspect="auto",
                x=[f"frame {f + 1}" for f in range(prepared.layout.n_frames)], y=[f"L{l + 1}" for l in range(model.cfg.n_layers)],
                color_continuous_scale="Blues", labels=dict(color="attention"))
for i, name in enumerate(["baseline", "cross-frame knocked out in L1–L2"]):
    fig.layout.annotations[i].text = name
fig.update_layout(title="Question → video attention per frame", width=900, height=380)
show(fig, "07_question_to_video")
mass = query_attention_to_video(model, prepared, "question_without_options").video_mass.mean(-1)
print("share of the question's attention on the video, per layer:", [round(m, 3) for m in mass.tolist()])

# %% [markdown]
# ## Over a dataset
#
# `run_attention` records these maps for every correctly answered example, with and without the
# knockout (by default: no cross-frame interactions in the first k layers), and the video mass with
# bootstrap intervals.

# %%
result = run_attention(model, examples, AttentionOptions(seed=0), out_dir=fresh_dir("attention_run"), progress=False)
result = AttentionResult.read(OUT / "attention_run")
for finding in result.findings():
    print("-", finding)
show(attention_maps(result), "07_attention_maps")
show(video_mass_by_layer(result), "07_video_mass")

summary = {
    "labels_video": [labels[p] for p in prepared.layout.video_positions],
    "tiny_labels_video": [label for label in tiny_labels if label.startswith("<video")],
    "circuitsvis": cv is not None, "video_mass_by_layer": mass.tolist(),
    "baseline_per_frame": per_frame.tolist(), "knocked_per_frame": knocked.flatten(2).nansum(-1).tolist(),
}
(OUT / "07_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("circuitsvis", "video_mass_by_layer")}))
