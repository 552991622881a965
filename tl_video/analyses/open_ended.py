"""Open-ended variant of the information-flow sweep: knockout on a token of the model's own answer.

For free-form answers there is no option letter to read. Instead (docs/methods.md, "Open-ended
variant"):

1. the model answers greedily (up to ``max_new_tokens``, stopping at EOS);
2. the probed token is the first token of an anchor word in that answer: the ``anchor_occurrence``-th
   generated word (case-insensitive, whole word) that is one of ``anchor_words``; with no
   ``anchor_words``, the generated token at ``anchor_position`` (default 0: the first generated token);
3. the input is truncated just before that token (prompt + the generated tokens before it), and for
   every flow configuration the next-token softmax is read under the knockout: ``change_anchor`` =
   (p_new(anchor) − p_base(anchor)) / p_base(anchor) × 100, the new argmax, and ``kept`` (the anchor
   is still the argmax). Generated rows inherit the blocked keys of the last prompt row (they are
   "last" tokens too); generated keys stay open — the knockout hooks implement exactly this;
4. optionally the whole answer is generated again under the knockout (``generated_knockout``).

Examples without an anchor in their answer are recorded (baseline, ``selected: false``, with the
reason) and not analysed. As in every pipeline, an example whose video cannot be decoded, whose input
is longer than the context, or whose answer was read from logits that are not finite (an fp16
overflow) gets a ``skipped`` record with the reason instead (`tl_video.analyses.scoring`); a
configuration whose probabilities are not finite is recorded as skipped with its reason, and a
generation under knockout whose logits are not finite keeps its probe numbers but no answer
(``generation_skipped`` holds the reason). ``samples`` defaults to ``"all"``: an answer counts as
correct when it starts with the true option's letter (multiple choice) or contains the reference
answer text (``metadata["answer"]`` of an open-ended example), case-insensitively.

Curves, per-task summaries and findings are those of the multiple-choice sweep
(`tl_video.analyses.flow.FlowResult`) on ``change_anchor``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from tl_video.analyses.distributed import owns
from tl_video.analyses.flow import (
    FlowConfig, FlowOptions, FlowResult, blocked_edge_count, flow_configs, open_sweep, relative_change,
)
from tl_video.analyses.records import RecordSink
from tl_video.analyses.scoring import (
    SKIPPED_PROBLEMS, NonFiniteLogitsError, not_finite_reason, prepare_for_study, skipped_record,
)
from tl_video.analyses.sweep import knockout_probabilities
from tl_video.data.examples import VideoQAExample, check_unique_ids
from tl_video.interventions.knockout import KnockoutSpec, knockout_hooks
from tl_video.model.generation import greedy_generate
from tl_video.model.kv_cache import KeyValueCache
from tl_video.prompts.prepared import PreparedInput

ANALYSIS = "open_ended"
WORD = re.compile(r"\w+")


@dataclass(frozen=True, kw_only=True)
class OpenEndedOptions(FlowOptions):
    """The flow sweep's options plus how the answer is generated and which of its tokens is probed."""

    presets: tuple[str, ...] = ("cross-frame", "vql-to-ql")  # the presets that need no option spans
    samples: str = "all"
    anchor_words: tuple[str, ...] = ()  # probe the first token of the n-th generated word in this list
    anchor_occurrence: int = 1  # n (1 = the first matching word)
    anchor_position: int = 0  # without anchor_words: the generated token probed (0 = the first)
    max_new_tokens: int = 16
    generate_under_knockout: bool = True  # also generate the whole answer again under each knockout

    def __post_init__(self) -> None:
        super().__post_init__()
        words = (self.anchor_words,) if isinstance(self.anchor_words, str) else self.anchor_words
        if not all(isinstance(w, str) and WORD.fullmatch(w.strip()) for w in words):
            raise ValueError(f"OpenEndedOptions.anchor_words must be single words such as 'opens', got {self.anchor_words!r}")
        object.__setattr__(self, "anchor_words", tuple(dict.fromkeys(w.strip().lower() for w in words)))
        for name, low in (("anchor_occurrence", 1), ("anchor_position", 0), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"OpenEndedOptions.{name} must be an integer >= {low}, got {value!r}")
        if not self.anchor_words and self.anchor_position >= self.max_new_tokens:
            raise ValueError(f"OpenEndedOptions.anchor_position={self.anchor_position} is past max_new_tokens="
                             f"{self.max_new_tokens}; generate more tokens or probe an earlier one")
        if not isinstance(self.generate_under_knockout, bool):
            raise ValueError(f"OpenEndedOptions.generate_under_knockout must be true or false, got {self.generate_under_knockout!r}")

    def to_json(self) -> dict[str, Any]:
        return super().to_json() | {"anchor_words": list(self.anchor_words)}


@dataclass(frozen=True)
class Answer:
    """The greedy answer to one prepared input and the token it probes."""

    tokens: tuple[int, ...]  # generated ids, EOS excluded
    text: str
    spans: tuple[tuple[int, int], ...]  # character span of each token in `text`
    anchor_index: int | None  # index into `tokens` of the probed token
    anchor_word: str | None
    not_finite: str | None = None  # why the logits the tokens were chosen from cannot be trusted (NaN or inf)


def generate(
    model: Any, prepared: PreparedInput, max_new_tokens: int, spec: KnockoutSpec | None = None, what: str = "the answer's logits"
) -> tuple[tuple[int, ...], str | None]:
    """Greedy answer tokens (EOS and what follows cut off), under ``spec``'s knockout when given, and why the
    logits they were chosen from are not finite (``what`` names them; None when they are all finite)."""
    hooks = [] if spec is None else knockout_hooks(spec, prepared.layout, model.cfg.n_layers)
    steps: list[torch.Tensor] = []
    with model.hooks(fwd_hooks=hooks):
        out = greedy_generate(model, prepared.tokens, max_new_tokens=max_new_tokens, on_logits=steps.append)
    new = out[0, prepared.tokens.shape[1]:].tolist()
    eos = getattr(model.tokenizer, "eos_token_id", None)
    return tuple(new[: new.index(eos)] if eos in new else new), not_finite_reason(what, torch.cat(steps))


def token_spans(tokenizer: Any, tokens: Sequence[int]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The decoded text and each token's character span in it (decoding prefixes, so merged bytes stay whole)."""
    spans, previous = [], ""
    for end in range(1, len(tokens) + 1):
        text = tokenizer.decode(list(tokens[:end]))
        spans.append((len(previous), len(text)))
        previous = text
    return previous, tuple(spans)


def find_anchor(text: str, spans: Sequence[tuple[int, int]], words: Sequence[str], occurrence: int = 1) -> tuple[int | None, str | None]:
    """(token index, word) of the first token of the ``occurrence``-th word of ``text`` in ``words``
    (case-insensitive, whole words), or (None, None)."""
    wanted = {w.lower() for w in words}
    seen = 0
    for match in WORD.finditer(text):
        if match.group().lower() not in wanted:
            continue
        seen += 1
        if seen == occurrence:
            for index, (start, end) in enumerate(spans):
                if start <= match.start() < end:
                    return index, match.group()
    return None, None


def answer(model: Any, prepared: PreparedInput, options: OpenEndedOptions) -> Answer:
    """Generate the baseline answer and locate its anchor token."""
    tokens, not_finite = generate(model, prepared, options.max_new_tokens)
    text, spans = token_spans(model.tokenizer, tokens)
    if options.anchor_words:
        index, word = find_anchor(text, spans, options.anchor_words, options.anchor_occurrence)
    else:
        index, word = (options.anchor_position, None) if options.anchor_position < len(tokens) else (None, None)
    return Answer(tokens, text, spans, index, word, not_finite)


@torch.no_grad()
def probe_probabilities(
    model: Any, prepared: PreparedInput, continuation: Sequence[int], specs: Sequence[KnockoutSpec]
) -> Float[torch.Tensor, "spec d_vocab"]:
    """Next-token softmax after prompt + ``continuation`` under each spec (float32, CPU).

    With no continuation this is `knockout_probabilities`; otherwise the prompt runs under the hooks
    into a KV cache and the continuation follows it, each generated row taking the last prompt row's
    blocked keys, as in generation under knockout.
    """
    if not continuation:
        return knockout_probabilities(model, prepared, specs)
    n_layers = model.cfg.n_layers
    follow = torch.tensor([list(continuation)], dtype=prepared.tokens.dtype, device=prepared.tokens.device)
    rows = []
    for spec in specs:
        with model.hooks(fwd_hooks=knockout_hooks(spec, prepared.layout, n_layers)):
            cache = KeyValueCache.empty(n_layers)
            model(prepared.tokens, past_kv_cache=cache)
            rows.append(model(follow, past_kv_cache=cache)[0, -1].float().softmax(-1).cpu())
    return torch.stack(rows) if rows else torch.zeros(0, model.cfg.d_vocab)


def is_correct(example: VideoQAExample, text: str) -> bool | None:
    """Starts with the true letter (multiple choice) or contains the reference answer; None without one."""
    answer_text = text.strip().lower()
    if example.is_multiple_choice and example.answer_index is not None:
        letter, option = example.answer_letter.lower(), example.answer_text.lower()
        return answer_text.startswith(letter) or option in answer_text
    reference = example.metadata.get("answer")
    return reference.strip().lower() in answer_text if isinstance(reference, str) and reference.strip() else None


def run_open_ended(
    model: Any, examples: Sequence[VideoQAExample], options: OpenEndedOptions = OpenEndedOptions(), *,
    out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
) -> "OpenEndedResult":
    """Sweep the configured flows on each example's anchor token; records go to ``<out_dir>/open_ended.jsonl``."""
    if not isinstance(options, OpenEndedOptions):
        raise ValueError(f"run_open_ended options must be OpenEndedOptions, got {type(options).__name__}")
    if not examples:
        raise ValueError("run_open_ended: no examples to analyse")
    check_unique_ids(examples)
    n_layers = model.cfg.n_layers
    k, centres, sink = open_sweep(model, options, ANALYSIS, out_dir, resume)
    for example in tqdm(examples, desc=ANALYSIS, unit="example", disable=not progress):
        if not owns(example):  # another process's shard (tl_video.analyses.distributed)
            continue
        previous = sink.get(f"baseline/{example.example_id}")
        if previous is not None and not previous["selected"]:
            continue
        with model.video_bank.scope():  # the bank holds one example's video at a time
            try:
                prepared = prepare_for_study(model, example, options)
                base = answer(model, prepared, options)
                if base.not_finite is not None:
                    raise NonFiniteLogitsError(f"example {example.example_id!r}: {base.not_finite}")
                task = example.task or "all"
                record = _baseline_record(example, task, base, options, model, prepared)
            except SKIPPED_PROBLEMS as error:
                if previous is not None:
                    raise  # analysed before and failing now: the data changed
                sink.append(skipped_record(example, error))
                continue
            if previous is None:
                sink.append(record)
            if record["selected"]:
                configs = flow_configs(options, prepared.layout, centres, n_layers, k)
                _sweep(model, example.example_id, task, prepared, base, record, configs, options, sink, k)
    return OpenEndedResult(sink.header, list(sink.records))


def _baseline_record(example: VideoQAExample, task: str, base: Answer, options: OpenEndedOptions, model: Any,
                     prepared: PreparedInput) -> dict[str, Any]:
    correct = is_correct(example, base.text)
    wanted = options.samples == "all" or (correct is not None and correct == (options.samples == "correct"))
    record = {"key": f"baseline/{example.example_id}", "kind": "baseline", "example_id": example.example_id,
              "task": task, "generated": base.text, "generated_tokens": list(base.tokens), "correct": correct,
              "anchor_index": base.anchor_index, "anchor_word": base.anchor_word, "n_tokens": prepared.layout.n_tokens}
    if base.anchor_index is None:
        what = (f"holds fewer than {options.anchor_occurrence} of the anchor words {list(options.anchor_words)}"
                if options.anchor_words else f"has no token at position {options.anchor_position}")
        return record | {"selected": False, "reason": f"the answer {base.text!r} {what}"}
    if not wanted:
        return record | {"selected": False, "reason": f"not answered {options.samples} (samples={options.samples!r})"}
    anchor = base.tokens[base.anchor_index]
    p = probe_probabilities(model, prepared, base.tokens[: base.anchor_index], [KnockoutSpec()])[0]
    reason = not_finite_reason("the anchor's probabilities", p)
    if reason is not None:
        raise NonFiniteLogitsError(f"example {example.example_id!r}: {reason}")
    start, end = base.spans[base.anchor_index]
    return record | {"selected": True, "anchor_token": anchor, "anchor_text": base.text[start:end],
                     "p_anchor": float(p[anchor])}


def _sweep(model: Any, example_id: str, task: str, prepared: PreparedInput, base: Answer, baseline: dict[str, Any],
           configs: list[FlowConfig], options: OpenEndedOptions, sink: RecordSink, k: int) -> None:
    """Evaluate the configurations not yet on disk (one probe call), then write their records in order."""
    n_layers = model.cfg.n_layers
    pending = [c for c in configs if not sink.has(c.key(example_id, ANALYSIS))]
    checks = [blocked_edge_count(c.spec, prepared.layout, n_layers) for c in pending]
    runnable = [c.spec for c, (count, _) in zip(pending, checks) if count is not None]
    prefix = base.tokens[: base.anchor_index]
    probabilities = iter(probe_probabilities(model, prepared, prefix, runnable))
    anchor, p_base = baseline["anchor_token"], baseline["p_anchor"]
    for config, (count, reason) in zip(pending, checks):
        record = {"key": config.key(example_id, ANALYSIS)} | config.fields(example_id, task, k, ANALYSIS)
        if count is None:
            sink.append(record | {"skipped": True, "reason": reason})
            continue
        p = next(probabilities)
        reason = not_finite_reason("the knockout's probabilities", p)
        if reason is not None:  # e.g. an fp16 overflow: never averaged
            sink.append(record | {"skipped": True, "reason": reason})
            continue
        new_token = int(p.argmax())
        record |= {"skipped": False, "n_blocked_edges": count, "anchor_token": anchor, "anchor_index": base.anchor_index,
                   "p_anchor": p_base, "p_anchor_knockout": float(p[anchor]),
                   "change_anchor": relative_change(float(p[anchor]), p_base),
                   "new_token": new_token, "kept": new_token == anchor}
        if options.generate_under_knockout:
            tokens, reason = generate(model, prepared, options.max_new_tokens, config.spec,
                                      what="the logits of the answer under knockout")
            record |= ({"generated_knockout": model.tokenizer.decode(list(tokens)), "same_answer": tokens == base.tokens}
                       if reason is None else {"generation_skipped": reason})
        sink.append(record)


class OpenEndedResult(FlowResult):
    """The records of an open-ended run; the flow summaries on the anchor token's probability."""

    ANALYSIS: ClassVar[str] = ANALYSIS
    METRICS: ClassVar[dict[str, str]] = {"anchor": "change_anchor"}
    METRIC_NAMES: ClassVar[dict[str, str]] = {"anchor": "the anchor token's probability"}
    DEFAULT_METRIC: ClassVar[str] = "anchor"
    CORRECT_FIELD: ClassVar[str] = "kept"
    ACCURACY_NAME: ClassVar[str] = "anchor token still top-1"

    def answers_changed(self, label: str, *, window: str = "center", preset: str | None = None) -> dict[int, tuple[int, int]]:
        """Per centre layer: (answers that differ under the knockout, answers generated under it)."""
        _, rows = self._select(label, preset, window, None)
        rows = [r for r in rows if "same_answer" in r]
        return {layer: (sum(not r["same_answer"] for r in rows if r["center"] == layer),
                        sum(1 for r in rows if r["center"] == layer)) for layer in self.centres()}
