# %% [markdown]
# # 01 · TransformerLens on a VideoLLM
#
# `tl_video` gives a Video LLM's language backbone the TransformerLens interface: the same hook
# names, `run_with_cache`, `ActivationCache`, `patching`. What is new is the *video*: a front end
# turns frames into projected video tokens, and a **layout** says where every frame, the question,
# each option and the last position sit in the sequence.
#
# This tutorial runs on the built-in model `tl-video/toy-temporal` (a 5 MB LLaVA-NeXT-Video
# checkpoint trained on a synthetic temporal benchmark; 6 layers, 4 heads, one video token per
# frame) on CPU in well under a minute. Everything here works the same on a real checkpoint
# (`HookedVideoTransformer.from_pretrained("llava-hf/LLaVA-NeXT-Video-7B-hf")`).
#
# Contents: loading · real video files and the video bank · the layout and its selectors ·
# `run_with_cache` and hook names · `ActivationCache` decomposition · direct logit attribution
# to components, to frames and to single video tokens.

# %%
import json

import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

import tl_video
from tl_video.data import generate_benchmark
from tl_video.prompts import prepare_example
from tl_video.prompts.answers import option_token_ids
from tl_video.video import read_video
from tutorial_figures import output_dir, show

torch.set_grad_enabled(False)
OUT = output_dir()

# %% [markdown]
# ## Loading
#
# `from_pretrained` takes a hub id or a folder. The config is a TransformerLens-style
# `VideoTransformerConfig`; the front end (processor, vision tower, projector) travels with the model.

# %%
model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
cfg = model.cfg
print(f"{cfg.model_name}: {cfg.family}, {cfg.n_layers} layers, {cfg.n_heads} heads, d_model={cfg.d_model}, d_vocab={cfg.d_vocab}")

# %% [markdown]
# ## Real video files
#
# The synthetic benchmark renders real mp4 files (with `tl_video.video.write_video`) and a list of
# `VideoQAExample`s. Here: one "which way does it move?" question and one "what happens first?"
# question. `read_video` decodes a file and samples frames at segment midpoints.

# %%
examples = generate_benchmark(OUT / "bench", n_per_task=1, seed=0, tasks=["moving_direction", "action_sequence"])
example = examples[0]
print(example.question, example.options, "answer:", example.answer_letter)
decoded = read_video(example.video, num_frames=8)
print(decoded.frames.shape, decoded.frames.dtype)

strip = make_subplots(rows=1, cols=8, horizontal_spacing=0.01, subplot_titles=[f"frame {i}" for i in range(8)])
for i, frame in enumerate(decoded.frames):
    strip.add_trace(go.Image(z=frame), row=1, col=i + 1)
strip.update_xaxes(visible=False).update_yaxes(visible=False).update_layout(width=900, height=170, margin=dict(l=5, r=5, t=30, b=5))
show(strip, "01_frames")

# %% [markdown]
# ## Prepared inputs and the video bank
#
# `prepare_example` (or `model.prepare(video=frames, prompt=...)` for your own text) applies the
# checkpoint's chat template, runs its processor, vision tower and projector, and stores the
# projected video tokens in the model's **video bank**. The returned `.tokens` is a plain integer
# tensor: text ids as usual, and video tokens as ids at or above `d_vocab` that index the bank.
# That is why any TransformerLens function that only takes tokens works on videos unchanged.

# %%
clean = prepare_example(model, example)
tokens = clean.tokens
print(tokens.shape, "video ids:", tokens[0][tokens[0] >= cfg.d_vocab].tolist())
print(model.video_bank.embeddings.shape, "stored video-token embeddings (rows of the bank)")

# %% [markdown]
# `to_str_tokens` labels every video token with its frame, row and column in the vision grid:
# `<video f3 r0 c0>` is frame 3, row 0, column 0 (this toy model pools each frame to a single
# token; a 7B LLaVA-NeXT-Video has 12 × 12 per frame).

# %%
str_tokens = model.to_str_tokens(tokens)
print(str_tokens[:16])

# %% [markdown]
# ## The layout and its selectors
#
# Never index positions by hand: name them. A selector is a small expression over the token groups
# (`video`, `frame[i]`, `question`, `question_without_options`, `option[B]`, `true_option`,
# `false_options`, `answer_prompt`, `last`, `text`, `all`, `pos[...]`) combined with `|`, `-`,
# `&` and `~`. `docs/methods.md` defines every group.

# %%
layout = clean.layout
print(layout)
for selector in ["frame[2]", "frame[0:4]", "true_option", "question - question_without_options", "all - video - last"]:
    positions = layout.positions(selector)
    print(f"{selector!r:40} -> {len(positions):2d} positions, e.g. {model.to_string(tokens[0, positions[:6]])!r}")

# %% [markdown]
# ## `run_with_cache` and hook names
#
# The hook names are TransformerLens's (`blocks.{l}.hook_resid_pre`, `attn.hook_pattern`, ...), plus
# `hook_video_embed` (the projected video tokens before they enter the residual stream) and
# `blocks.{l}.attn.hook_attn_mask` (the additive attention mask, where knockouts act).

# %%
logits, cache = model.run_with_cache(tokens)
print(type(cache).__module__ + "." + type(cache).__name__)
print([name for name in model.hook_dict if name.startswith("blocks.0.")][:12], "...")
print("video embeddings:", cache["hook_video_embed"].shape, " pattern L1:", cache["pattern", 0].shape)

letters = option_token_ids(model.tokenizer, clean)  # {"A": id, ...}, resolved in the prompt's context
probs = logits[0, -1].softmax(-1)
answer = max(letters, key=lambda letter: probs[letters[letter]])
print({letter: round(probs[token].item(), 3) for letter, token in letters.items()}, "-> model answers", answer,
      "| true answer", example.answer_letter)

# %% [markdown]
# ## `ActivationCache` decomposition
#
# `accumulated_resid` and `decompose_resid` are TransformerLens's own. With the direction of the
# logit difference "true letter minus the mean of the false letters", `logit_attrs` gives each
# component's direct contribution at the last position (after the final RMSNorm scale).

# %%
true_id = letters[example.answer_letter]
false_ids = [token for letter, token in letters.items() if letter != example.answer_letter]
direction = model.tokens_to_residual_directions(torch.tensor([true_id])) - model.tokens_to_residual_directions(
    torch.tensor(false_ids)).mean(0)

accumulated, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
accumulated = cache.apply_ln_to_stack(accumulated, layer=-1, pos_slice=-1)
lens_curve = (accumulated[:, 0] @ direction[0]).tolist()

components, component_labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
component_attrs = cache.apply_ln_to_stack(components, layer=-1, pos_slice=-1)[:, 0] @ direction[0]
true_logit_diff = (logits[0, -1, true_id] - logits[0, -1, false_ids].mean()).item()
print(f"logit difference {true_logit_diff:.3f} = sum of direct attributions {component_attrs.sum().item():.3f}")

fig = make_subplots(rows=1, cols=2, subplot_titles=["accumulated residual (logit lens)", "per component"])
fig.add_trace(go.Scatter(x=labels, y=lens_curve, mode="lines+markers", name="accumulated"), row=1, col=1)
fig.add_trace(go.Bar(x=component_labels, y=component_attrs.tolist(), name="direct"), row=1, col=2)
fig.update_layout(width=950, height=350, showlegend=False, yaxis_title="logit difference (true − false)")
show(fig, "01_decomposition")

# %% [markdown]
# ## Direct logit attribution to frames
#
# An attention head's output at the last position is a sum over the positions it attends to:
# `pattern[last, s] · (v[s] @ W_O)`. Projecting each term on the (final-norm scaled) logit
# direction splits every layer's direct attribution by *source position*; summing the positions
# of `frame[i]` gives a layer × frame table. Only the direct path counts here: what a frame
# contributed through later positions (e.g. the question tokens) shows up at those positions.

# %%
last = layout.positions("last").item()
final_scale = cache["ln_final.hook_scale"][0, last]  # RMSNorm divides by this
by_source = torch.zeros(cfg.n_layers, layout.n_tokens)
for layer in range(cfg.n_layers):
    v = cache["v", layer][0]  # [pos, kv_head, d_head]
    v = v.repeat_interleave(cfg.n_heads // v.shape[1], dim=1)  # grouped-query heads share values
    pattern = cache["pattern", layer][0, :, last]  # [head, key_pos]
    per_source = torch.einsum("hs,shd,hdm->sm", pattern, v, model.W_O[layer])  # [key_pos, d_model]
    by_source[layer] = (per_source / final_scale) @ direction[0]
    assert torch.allclose(by_source[layer].sum(), component_attrs[component_labels.index(f"{layer}_attn_out")], atol=1e-4)

frames = [f"frame {i}" for i in range(layout.n_frames)]
by_frame = torch.stack([by_source[:, layout.positions(f"frame[{i}]")].sum(-1) for i in range(layout.n_frames)], dim=1)
by_group = {group: by_source[:, layout.positions(group)].sum().item() for group in ["video", "question", "answer_prompt - last", "last"]}
print("direct attribution through attention, by source group:", {k: round(v, 3) for k, v in by_group.items()})
fig = px.imshow(by_frame.numpy(), x=frames, y=[f"L{l + 1}" for l in range(cfg.n_layers)], color_continuous_scale="RdBu",
                color_continuous_midpoint=0.0, aspect="auto", labels=dict(color="logit diff"))
fig.update_layout(title="Direct logit attribution of each frame, through each layer's attention", width=650, height=380)
show(fig, "01_dla_by_frame")

# %% [markdown]
# For a model with several video tokens per frame, the same table per video token maps back to
# the vision grid with `layout.on_video_grid(values)` → `[..., frame, row, col]`.

# %%
by_video_token = by_source[:, torch.tensor(layout.video_positions)]  # [layer, video_token]
grid = layout.on_video_grid(by_video_token)
print("per video token, on the grid:", tuple(grid.shape), "(layer, frame, row, col)")

summary = {
    "answer": answer, "true_answer": example.answer_letter, "logit_diff": true_logit_diff,
    "sum_of_component_attributions": component_attrs.sum().item(), "by_frame": by_frame.tolist(),
    "video_attribution": by_group["video"], "n_video_tokens": len(layout.video_positions),
    "video_label_example": str_tokens[layout.video_positions[3]],
}
(OUT / "01_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v for k, v in summary.items() if k != "by_frame"}))
