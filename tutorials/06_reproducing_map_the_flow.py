# %% [markdown]
# # 06 · Reproducing "Map the Flow" on a real checkpoint and TVBench
#
# "Map the Flow: Revealing Hidden Pathways of Information in VideoLLMs" (Kim, Kim, Han; ICLR 2026,
# arXiv 2510.13251) runs six analyses on LLaVA-NeXT-Video-7B and friends over five TVBench tasks.
# `tl-video study` runs the same analyses, in the same order, on any supported checkpoint and
# writes records, figures and an HTML report. This tutorial gives the commands for a real run on a
# GPU, what it costs, and how to read each figure; the cells below run the same study on the
# built-in model (on CPU, in about a minute), so every figure it describes is produced here.
#
# ## On a GPU: the commands
#
# ```bash
# pip install -e .                                   # torch with CUDA first, as for any PyTorch project
# huggingface-cli download FunAILab/TVBench --repo-type dataset --local-dir TVBench
# huggingface-cli download llava-hf/LLaVA-NeXT-Video-7B-hf           # ~15 GB of safetensors
# tl-video study --out tvbench_llava_next_video_7b \
#     --model llava-hf/LLaVA-NeXT-Video-7B-hf --data TVBench --n 40 \
#     --device cuda --dtype bfloat16 --prompt-style paper
# ```
#
# - `--prompt-style paper` writes the reference code's literal prompt for the family
#   (`docs/methods.md`, "Prompt styles"); baseline accuracy, hence which examples are analysed,
#   depends on it. `--samples correct` (the default) analyses only examples answered correctly.
# - TVBench's Action Antonym videos come from NTU RGB+D, distributed by NTU itself; without them
#   leave that task out with `--tasks` (the other paper tasks: `tl_video.data.TVBENCH_PAPER_TASKS`).
# - `--resume` continues an interrupted run; records already written are kept.
# - `--analyses flow pathways` (or a `--config` file, README "The study") runs a subset.
#
# **Expected cost** (an estimate from the number of forward passes, not a measurement): about
# 1,150 forwards per analysed example on a 32-layer model (information flow 11 curves × 32 centre
# layers; patching 3 corruptions × 32 layers × 8 frames; the rest about 10) over ~1,300 tokens.
# At 0.05–0.1 s per bf16 forward on one H100/H200-class GPU, that is 1–2 minutes per analysed
# example: `--n 40` (200 questions, about half answered correctly) takes roughly 2–4 hours. Memory:
# ~16 GB of bf16 weights plus under 2 GB of activations, so a 24 GB GPU suffices. The knockout
# sweeps use the exact sweep engine (one clean pass, each knockout resumed from its first blocked
# layer), which is what keeps the 352 flow configurations per example affordable.
#
# ## The same study on the built-in model
#
# The command line and Python run the same code; here through `tl_video.cli.main` with the
# built-in model and the synthetic benchmark (1 example per task; `tl-video study --out study`
# with no options uses 8 per task).

# %%
import json

from tl_video.analyses import FlowResult, LensResult, PatchingResult, PathwayResult
from tl_video.analyses.attention import AttentionResult
from tl_video.analyses.generation_probability import GenerationProbabilityResult
from tl_video.cli import main
from tl_video.plots.flow import flow_curves
from tutorial_figures import fresh_dir, output_dir, show

OUT = output_dir()
study = fresh_dir("study")
status = main(["study", "--out", str(study), "--n", "1", "--seed", "0", "--quiet"])
assert status == 0, f"tl-video study exited with {status}"
print(sorted(path.name for path in study.iterdir()))
run = json.loads((study / "run.json").read_text())
print({name: (info["status"], info["n_records"], round(info["seconds"], 1)) for name, info in run["analyses"].items()})

# %% [markdown]
# `report.html` is the thing to open: every finding as a sentence with its test, p-value and n,
# baseline accuracy per task with denominators, every figure (interactive), the exact command,
# timings and versions. Every result also reads back from its folder in Python:

# %%
flow = FlowResult.read(study)
results = {"flow": flow, "pathways": PathwayResult.read(study), "generation_probability": GenerationProbabilityResult.read(study),
           "lens": LensResult.read(study), "attention": AttentionResult.read(study), "patching": PatchingResult.read(study)}
findings = [finding for result in results.values() for finding in result.findings()]
for finding in findings:
    print("-", finding)
show(flow_curves(flow, "vql-to-ql"), "06_flow_vql-to-ql_center")

# %% [markdown]
# ## How to read each figure (in `figures/`, and in the report)
#
# - **`flow_<preset>_<window>`**: x = centre layer of the blocked window, y = mean % change of
#   p(true option) (0 = no effect, −100% = gone), one line per blocked flow with its 95% bootstrap
#   band. In the paper (7B models): cross-frame interactions and Video→Question matter in early to
#   middle layers, Question→Last in middle layers, Video→Last hardly at all: the video reaches the
#   answer through the question tokens. `_by_task` repeats it per task.
# - **`accuracy_<preset>_<window>`**: accuracy under each knockout, with the no-knockout accuracy
#   and its denominator; it shows whether a drop in probability also flips answers.
# - **`generation_probability`**: p(true letter) vs p(false letters) read from each layer's
#   residual at the last position; the layer where the true letter separates is where the answer
#   is formed.
# - **`lens_vocabulary_spatial` / `_temporal`**: share of video tokens whose top-1 logit-lens
#   token is an object word / an action or direction word, per layer bin; the paper sees temporal
#   words rise in middle layers. **`lens_token_grid`**: the top-1 word over each frame, layer by
#   layer. **`lens_answer_probability`**: option-letter probability by layer.
# - **`pathways_table`, `pathways_edges_accuracy`**: accuracy with full attention, with only the
#   effective pathways, and with as many random edges blocked, against the share of edges kept.
#   Pathways near full accuracy with far fewer edges, and random blocking much worse, is the
#   paper's claim that the found pathways suffice.
# - **`attention_maps`, `attention_token_maps`, `attention_video_mass`**: where the question
#   attends in the video per layer and frame, baseline vs a cross-frame knockout, and the share of
#   its attention on the video.
# - **`patching_<corruption>`**: normalised recovery (0 = corrupted, 1 = clean) when one frame's
#   clean residual is patched into the corrupted run, layer × frame, with the clean and corrupted
#   metric values and the number of excluded examples.
#
# A toy model's figures are not the paper's: the built-in model is 6 layers deep and was trained
# on synthetic clips. Read them for the mechanics; read a 7B run for the science.

# %%
baseline = flow.baseline()
summary = {"analyses": sorted(run["analyses"]), "statuses": {n: i["status"] for n, i in run["analyses"].items()},
           "n_findings": len(findings), "baseline_correct": baseline["n_correct"], "baseline_examples": baseline["n_examples"],
           "figures": sorted(path.name for path in (study / "figures").glob("*.html"))}
(OUT / "06_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: v for k, v in summary.items() if k != "figures"}))
