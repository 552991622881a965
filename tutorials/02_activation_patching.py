# %% [markdown]
# # 02 · Activation patching between clean and corrupted videos
#
# Activation patching asks *where* the information that decides an answer lives: run the model on
# a corrupted input, paste in one activation from the clean run, and see how much of the clean
# answer comes back. For a Video LLM the natural corruptions change the video and keep the text:
# **reverse** the frames (a "moving left" clip becomes "moving right"), **shuffle** them, or
# **freeze** the video on one frame (no motion at all).
#
# Because `tl_video` hands the model plain token tensors (video tokens are ids into the model's
# video bank), TransformerLens's own `patching` functions run unchanged; `tl_video.interventions`
# adds per-frame helpers that name token groups with layout selectors. Runs on the built-in model
# on CPU in about a minute.

# %%
import json

import numpy as np
import plotly.express as px
import torch
from transformer_lens import patching

import tl_video
from tl_video.analyses import PatchingOptions, PatchingResult, run_patching
from tl_video.data import generate_benchmark
from tl_video.interventions import mean_of, normalized_recovery, patch_frames, stack_examples
from tl_video.plots.patching import recovery_heatmap
from tl_video.prompts import prepare_example
from tl_video.prompts.answers import option_token_ids
from tl_video.video import Freeze, Reverse, Shuffle, read_video, write_video
from tutorial_figures import fresh_dir, output_dir, show

torch.set_grad_enabled(False)
OUT = output_dir()
model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")

# %% [markdown]
# ## A clean and a corrupted video, as real files
#
# The synthetic benchmark writes mp4 files; we reverse one clip and write the corrupted clip as a
# file too (`write_video`), then read both back the way a dataset would be read. The benchmark
# records the answer of the reversed clip in `example.metadata["reversed_answer_index"]`.

# %%
examples = generate_benchmark(OUT / "bench", n_per_task=3, seed=0, tasks=["moving_direction", "action_sequence"])
example = examples[0]
clean_frames = read_video(example.video, num_frames=8).frames
reversed_path = write_video(OUT / "reversed.mp4", Reverse()(read_video(example.video, num_frames=16).frames), fps=8.0)
reversed_frames = read_video(reversed_path, num_frames=8).frames

clean = prepare_example(model, example, video=clean_frames)
corrupted = prepare_example(model, example, video=reversed_frames)
clean.layout.check_same_as(corrupted.layout)  # patching needs the same positions in both runs

letters = option_token_ids(model.tokenizer, clean)
clean_letter = example.answer_letter
corrupted_letter = example.option_letters[example.metadata["reversed_answer_index"]]
print(example.question, dict(zip(example.option_letters, example.options)))
print("clean answer:", clean_letter, "| answer of the reversed clip:", corrupted_letter)

# %% [markdown]
# ## The metric
#
# The logit difference between the clean answer's letter and the corrupted answer's letter at the
# last position, one value per batch row. TransformerLens's scalar patching wants a scalar:
# `mean_of(metric)`. Normalised recovery rescales it so that 0 is the corrupted run and 1 the clean run.

# %%
def metric(logits):
    return logits[:, -1, letters[clean_letter]] - logits[:, -1, letters[corrupted_letter]]


clean_logits, clean_cache = model.run_with_cache(clean.tokens)
clean_value, corrupted_value = metric(clean_logits), metric(model(corrupted.tokens))
print(f"clean {clean_value.item():.2f}   corrupted {corrupted_value.item():.2f}")
recovery = normalized_recovery(metric, clean_value, corrupted_value)

# %% [markdown]
# ## TransformerLens's `patching`, unchanged
#
# `get_act_patch_resid_pre` patches the residual stream at every (layer, position). The positions
# are labelled with `to_str_tokens`, so video tokens read `<video f3 r0 c0>`.

# %%
by_position = patching.get_act_patch_resid_pre(model, corrupted.tokens, clean_cache, mean_of(recovery))  # [layer, pos]
labels = [f"{i}:{s}" for i, s in enumerate(model.to_str_tokens(clean.tokens))]
fig = px.imshow(by_position.numpy(), x=labels, y=[f"L{l + 1}" for l in range(model.cfg.n_layers)], aspect="auto",
                color_continuous_scale="RdBu", color_continuous_midpoint=0.0, labels=dict(color="recovery"))
fig.update_layout(title="Recovery when patching resid_pre at one position (reverse)", width=1100, height=330)
fig.update_xaxes(tickangle=-60, tickfont_size=8)
show(fig, "02_tl_patching_by_position")

# %% [markdown]
# ## Per-frame patching
#
# `patch_frames` patches all video tokens of one frame at a time (a selector `frame[i]`), through
# TransformerLens's `generic_activation_patch`: a [layer, frame] table. `patch_groups` does the same
# for any list of selectors (`["video", "question", "last"]`), and `patch_video_tokens` for single
# video tokens mapped onto the (frame, row, col) grid. This toy model has one token per frame, so
# the per-frame table equals the video columns of the table above.

# %%
by_frame = patch_frames(model, clean, corrupted, clean_cache, mean_of(recovery), progress=False)  # [layer, frame]
assert torch.allclose(by_frame, by_position[:, list(clean.layout.video_positions)], atol=1e-5)
by_group = tl_video.interventions.patch_groups(
    model, clean, corrupted, clean_cache, mean_of(recovery), ["video", "question", "answer_prompt"], progress=False)
print("recovery by group [layer, (video, question, answer_prompt)]:\n", by_group.numpy().round(2))

fig = px.imshow(by_frame.numpy(), x=[f"frame {i + 1}" for i in range(clean.layout.n_frames)],
                y=[f"L{l + 1}" for l in range(model.cfg.n_layers)], color_continuous_scale="RdBu",
                color_continuous_midpoint=0.0, zmin=-1, zmax=1, labels=dict(color="recovery"), text_auto=".2f")
fig.update_layout(title="Reverse: patching one clean frame into the reversed run", width=700, height=400)
show(fig, "02_layer_by_frame")

# %% [markdown]
# ## Three corruptions
#
# The corruption specs are small objects that apply themselves to frames and serialise to JSON
# (`Reverse()`, `Shuffle(seed=0)`, `Freeze(index=0)`; `tl_video.video.CORRUPTIONS` lists all). For
# shuffle and freeze there is no "corrupted answer" in the data, so we contrast the clean letter
# with the letter the model prefers on the corrupted clip.

# %%
gaps = {}
for spec in [Reverse(), Shuffle(seed=0), Freeze(index=0)]:
    bad = prepare_example(model, example, video=spec(clean_frames))
    bad_logits = model(bad.tokens)[0, -1]
    model_letter = max(letters, key=lambda letter: bad_logits[letters[letter]])
    gaps[spec.name] = (bad_logits[letters[clean_letter]] - bad_logits[letters[model_letter]]).item()
    if model_letter == clean_letter:  # nothing to restore: the pipeline below excludes such examples
        print(f"{spec!r:18} model still answers {clean_letter} on the corrupted clip: no gap to patch")
    else:
        print(f"{spec!r:18} model answers {model_letter} on the corrupted clip; "
              f"logit({clean_letter}) - logit({model_letter}) = {gaps[spec.name]:.2f}")

# %% [markdown]
# ## Statistics over examples with TransformerLens's `PatchingResult`
#
# With `reduce="none"` (and a metric that returns one value per batch row) every sweep returns
# TransformerLens's `PatchingResult`, which keeps the example axis and knows its statistics: mean,
# standard error, bootstrap interval, and a permutation p-value against the unpatched corrupted run.
# Examples with different prompts have different layouts, so each is swept on its own and
# `stack_examples` joins them. (With three examples a sign-flip test cannot go below p = 0.25.)

# %%
per_example = []
for other in [e for e in examples if e.task == "moving_direction"]:
    good = prepare_example(model, other)
    bad = prepare_example(model, other, video=Reverse()(good.frames))
    other_letters = option_token_ids(model.tokenizer, good)
    a, b = other_letters[other.answer_letter], other_letters[other.option_letters[other.metadata["reversed_answer_index"]]]
    other_metric = lambda logits, a=a, b=b: logits[:, -1, a] - logits[:, -1, b]  # noqa: E731
    good_logits, good_cache = model.run_with_cache(good.tokens)
    other_recovery = normalized_recovery(other_metric, other_metric(good_logits), other_metric(model(bad.tokens)))
    per_example.append(patch_frames(model, good, bad, good_cache, other_recovery, reduce="none", progress=False))
stacked = stack_examples(per_example)  # values [layer, frame, example]
low, high = stacked.bootstrap_ci(seed=0)
p_values = stacked.permutation_pvalue(seed=0)
best = divmod(int(stacked.mean().argmax()), clean.layout.n_frames)
print(f"{stacked.values.shape[-1]} examples; largest mean recovery at L{best[0] + 1}, frame {best[1] + 1}: "
      f"{stacked.mean()[best]:.2f} [{low[best]:.2f}, {high[best]:.2f}], permutation p = {p_values[best]:.2f}")

# %% [markdown]
# ## Statistics over examples: the patching pipeline
#
# `run_patching` does all of the above for every example the model answers correctly, for each
# corruption, writes one JSON record per (example, corruption) to `patching.jsonl` as it goes, and
# summarises with seeded bootstrap intervals and a permutation test. Examples whose clean and
# corrupted metric differ by less than `min_gap` logits are excluded and counted (e.g. a frozen
# clip may still get the same answer).

# %%
options = PatchingOptions(corruptions=(Reverse(), Shuffle(seed=0), Freeze(index=0)), seed=0)
result = run_patching(model, examples, options, out_dir=fresh_dir("patching_run"), progress=False)
result = PatchingResult.read(OUT / "patching_run")  # everything reads back from the records
for finding in result.findings():
    print("-", finding)
for corruption in result.corruptions:
    print(corruption, result.counts(corruption))
show(recovery_heatmap(result, "reverse"), "02_pipeline_reverse")

values = result.recovery_values("reverse")  # [example, layer, frame]
summary = {
    "clean_metric": clean_value.item(), "corrupted_metric": corrupted_value.item(),
    "recovery_last_layer_by_frame": by_frame[-1].tolist(), "recovery_first_layer_all_video": by_group[0, 0].item(),
    "gaps": gaps, "tl_stats_examples": stacked.values.shape[-1], "tl_stats_best_mean": stacked.mean()[best].item(), "pipeline_counts": {c: result.counts(c) for c in result.corruptions},
    "pipeline_mean_recovery_reverse": np.nan_to_num(values.mean(0)).tolist() if len(values) else [],
}
(OUT / "02_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("clean_metric", "corrupted_metric", "recovery_first_layer_all_video")}))
