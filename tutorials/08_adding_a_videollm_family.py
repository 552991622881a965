# %% [markdown]
# # 08 · Adding a new VideoLLM family
#
# A *family* is one HF architecture (`LlavaNextVideoForConditionalGeneration`,
# `Qwen2_5_VLForConditionalGeneration`, …). Supporting a new one takes four pieces, each a small
# module with one job, and this tutorial walks through them on the real code of an existing family,
# LLaVA-NeXT-Video (printed from the installed package, so it is never out of date):
#
# 1. the **adapter** (`tl_video/loading/<family>.py`): which HF class, how its text config maps to
#    `VideoTransformerConfig`, where the decoder and `lm_head` live, how to build the front end, how
#    to convert the decoder's weights; registered in `tl_video/loading/registry.py`;
# 2. the **front end** (`tl_video/frontend/<family>.py`): the checkpoint's own vision tower and
#    projector, reproducing HF's video path, returning the projected video tokens and each token's
#    (frame, row, col);
# 3. the **tiny builder** (`tl_video/testing/tiny_<family>.py`): a few-hundred-kB random checkpoint
#    with the real architecture and a real tokenizer and processor, saved to a folder, so the tests
#    load it through `from_pretrained` like a downloaded one;
# 4. the **parity test** (`tests/test_parity_<family>.py`, with the shared helpers in
#    `tests/parity.py`): our model and the HF model, each loaded on its own from that folder, agree
#    on logits, every layer's residual, attention patterns and greedy generation.
#
# Then a row in `docs/families.md` saying what HF does that we had to match. Runs on CPU in well
# under a minute (the last cell runs a real parity check).

# %%
import inspect
import json

import numpy as np
import plotly.graph_objects as go
import torch
from transformers import AutoProcessor

import tl_video
import tl_video.loading.llava_next_video as llava_next_video
from tl_video.frontend.base import VideoFeatures
from tl_video.frontend.llava_next_video import LlavaNextVideoFrontEnd
from tl_video.loading.family import FamilyAdapter
from tl_video.loading.registry import FAMILIES, family_for
from tl_video.testing import save_tiny_llava_next_video
from tutorial_figures import output_dir, show

torch.set_grad_enabled(False)
OUT = output_dir()


def show_source(obj, first: int | None = None) -> None:
    """Print an object's source (optionally only its first lines)."""
    lines = inspect.getsource(obj).splitlines()
    print("\n".join(lines[:first] if first else lines))


# %% [markdown]
# ## 1. The adapter
#
# `FamilyAdapter` holds only what differs between families. Its fields:

# %%
show_source(FamilyAdapter, first=16)

# %% [markdown]
# LLaVA-NeXT-Video's adapter: the decoder is a Llama, so the config mapping and the weight
# conversion are shared with every Llama-style family (`llama_config_fields`,
# `convert_llama_weights`); what is its own is the HF class and the front end's parts.

# %%
source = inspect.getsource(llava_next_video)
print(source[source.index("def _frontend"):])

# %% [markdown]
# Families are looked up by the `architectures` entry of the checkpoint's `config.json` (plus any
# `required_config_keys`, e.g. PLLaVA's `pooling_shape` on a plain `LlavaForConditionalGeneration`):

# %%
print([family.name for family in FAMILIES])

# %% [markdown]
# ## 2. The front end
#
# A `VideoFrontEnd` runs the checkpoint's processor (`process`), picks the processor outputs it
# needs (`video_inputs`), and `encode`s them into `VideoFeatures`: the projected tokens in the order
# the LM's placeholders consume them, and a (frame, row, col) grid that the layout and
# `to_str_tokens` use. Families that depend on *when* frames were taken (M-RoPE time, timestamp
# text) set `default_fps`.

# %%
show_source(VideoFeatures)
show_source(LlavaNextVideoFrontEnd)

# %% [markdown]
# The front end's docstring cites the HF function it mirrors (here
# `LlavaNextVideoModel.get_video_features`); write yours the same way, with every quirk the HF code
# has (pooling order, a newline token, CLS dropped or not), because the parity test will find them.
#
# ## 3. The tiny builder
#
# A random checkpoint of the real architecture, small enough to build in a second, saved with its
# tokenizer, processor and chat template. Its shape options (GQA, biases, rope scaling) let the
# parity tests cover the configurations released checkpoints use.

# %%
show_source(save_tiny_llava_next_video)
folder = save_tiny_llava_next_video(OUT / "tiny-llava-next-video")
print(sorted(path.name for path in folder.iterdir()))

# %% [markdown]
# ## 4. The parity check
#
# Our model and HF's, each loaded on its own from the folder. The prepared input's text (with the
# family's `<video>` placeholder) goes through the HF processor, and both models run; the test
# suite's version (`tests/parity.py`, `assert_matches_hf`) also compares every layer's attention
# pattern, the final norm and greedy generation, at fp32 and bf16.

# %%
model = tl_video.HookedVideoTransformer.from_pretrained(folder)
config = json.loads((folder / "config.json").read_text())
family = family_for(config, str(folder))
hf_model = family.load_hf_model(folder, torch.float32).eval()
processor = AutoProcessor.from_pretrained(folder)

frames = np.random.RandomState(0).randint(0, 256, (4, 64, 64, 3), dtype=np.uint8)
prepared = model.prepare(video=frames, prompt="What happens in the video?")
hf_inputs = model.frontend.process(processor, prepared.text, frames)
assert torch.equal(hf_inputs["input_ids"] == model.frontend.video_token_id, model.video_bank.is_video(prepared.tokens))

logits, cache = model.run_with_cache(prepared.tokens, names_filter=lambda name: name.endswith("hook_resid_pre"))
reference = hf_model(**hf_inputs, output_hidden_states=True)
logit_diff = (logits - reference.logits).abs().max().item()
residual_diff = [(cache["resid_pre", layer] - reference.hidden_states[layer]).abs().max().item() for layer in range(model.cfg.n_layers)]
print(f"{family.name}: max |logits ours - HF| = {logit_diff:.1e}; per-layer resid_pre: {[f'{d:.0e}' for d in residual_diff]}")
fig = go.Figure(go.Bar(x=[f"resid_pre L{l + 1}" for l in range(model.cfg.n_layers)] + ["logits"],
                       y=[max(d, 1e-12) for d in residual_diff + [logit_diff]],
                       text=[f"{d:.1e}" if d else "0 (exact)" for d in residual_diff + [logit_diff]], textposition="outside"))
fig.update_yaxes(type="log", title="max |ours − HF| (fp32)", range=[-12, 0])
fig.update_layout(title=f"Parity with the HF model ({family.name}, tiny random checkpoint)", width=600, height=350)
show(fig, "08_parity")

# %% [markdown]
# ## Checklist for a new family
#
# - `tl_video/loading/<family>.py`: an adapter; reuse `llama_config_fields` / `convert_llama_weights`
#   when the decoder is Llama-like, otherwise map the new fields into `VideoTransformerConfig`
#   (never branch on the model name elsewhere).
# - `tl_video/frontend/<family>.py`: a `VideoFrontEnd` mirroring HF's video path; the docstring names
#   the HF function and the token order.
# - add the adapter to `FAMILIES` in `tl_video/loading/registry.py`.
# - `tl_video/testing/tiny_<family>.py`: `save_tiny_<family>(folder, **shape_options)`.
# - `tests/test_parity_<family>.py` with `tests/parity.py`'s `load_pair`, `prepare_with_reference`
#   and `assert_matches_hf`; cover the released checkpoints' configuration options.
# - a row in README's supported-models table and a section in `docs/families.md`.

# %%
summary = {"family": family.name, "max_logit_difference": logit_diff, "max_residual_difference": max(residual_diff),
           "n_video_tokens": len(prepared.layout.video_positions)}
(OUT / "08_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
