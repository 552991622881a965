"""Segments cover every token that carries any of their characters (overlap rule).

Checked on two tokenizers with real merges, built offline: a byte-level BPE in the style of
Qwen2 (regex split, "Ġ" for a leading space) and a SentencePiece-style BPE in the style of
Llama/Vicuna (Metaspace "▁", byte fallback, BOS). The oracle rebuilds each token's bytes from its
token string alone (never from the offsets the code under test uses) and derives the expected
spans from those.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import TokenizersBackend
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tl_video.prompts import multiple_choice_prompt
from tl_video.prompts.alignment import token_spans
from tl_video.prompts.layout import Span
from tl_video.prompts.prepare import _character_spans

VIDEO = "<video>"
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
SENTENCES = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: <video>\nQuestion: Which way did the square move?\nOptions:\n(A) left\n(B) right\nOnly give the best option. ASSISTANT: Best option:(",
    "<|im_start|>user\n<video>\nQuestion: How many times did the ball bounce?\nOptions:\n(A) once\n(B) twice\n(C) three times<|im_end|>\n<|im_start|>assistant\nBest option:(",
    "Question: What happened after the man opened the door?\nOptions:\n(A) He sat down.\n(B) He left, quickly!\n(C) Nothing (really).",
    "Where did the red ball roll? Is the object moving left or right? What color is the car?",
]
CORPUS = [sentence.replace(VIDEO, " ") for sentence in SENTENCES] * 20


def _wrap(backend: Tokenizer, specials: dict[str, str], extra: list[str]) -> TokenizersBackend:
    tokenizer = TokenizersBackend(tokenizer_object=backend, **specials)
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    return tokenizer


def _merges(learner: Tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(learner.to_str())["model"]["merges"]
    return [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in merges]


@lru_cache(maxsize=None)
def byte_level_tokenizer() -> TokenizersBackend:
    """Qwen2-style: regex split, byte-level alphabet, merges learned on the corpus, no BOS."""
    def pre_tokenizer():
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizer()
    learner.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=700, min_frequency=2, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    merges = _merges(learner)
    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    extra = ["<|im_start|>", VIDEO]
    backend.add_special_tokens([*specials.values(), *extra])
    return _wrap(backend, specials, extra)


@lru_cache(maxsize=None)
def sentencepiece_tokenizer() -> TokenizersBackend:
    """Llama/Vicuna-style: Metaspace "▁" prepended to the first piece, byte fallback, BOS added."""
    def pre_tokenizer(split: bool):  # SentencePiece learns merges within words, applies them to whole text
        return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=split)
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizer(True)
    # Like Llama's SentencePiece model: no merge crosses a newline ("\n" is the byte token <0x0A>).
    corpus = [line for text in CORPUS for line in text.split("\n")]
    learner.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, min_frequency=2, show_progress=False))
    merges = _merges(learner)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    for token in json.loads(learner.to_str())["model"]["vocab"]:
        vocab.setdefault(token, len(vocab))
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.pre_tokenizer = pre_tokenizer(False)
    backend.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    backend.add_special_tokens([*specials.values(), VIDEO])
    return _wrap(backend, specials, [VIDEO])


TOKENIZERS = {"byte_level": byte_level_tokenizer, "sentencepiece": sentencepiece_tokenizer}
_BYTE_OF = {char: byte for byte, char in bytes_to_unicode().items()}
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-F]{2})>$")


def token_bytes(kind: str, tokenizer, token_id: int, text: str) -> bytes:
    """The bytes of the text one token stands for, rebuilt from its token string alone."""
    token = tokenizer.convert_ids_to_tokens(token_id)
    if token in tokenizer.all_special_tokens or token == VIDEO:
        return token.encode() if token in text else b""  # template-added specials (BOS) carry no text
    if kind == "byte_level":
        return bytes(_BYTE_OF[char] for char in token)
    match = _BYTE_TOKEN.match(token)
    return bytes([int(match[1], 16)]) if match else token.replace("▁", " ").encode()


def token_byte_bounds(kind: str, tokenizer, text: str, run: int) -> list[tuple[int, int] | None]:
    """Per position of the processed sequence (video expanded to `run` tokens): the [start, end) bytes
    of `text` that token carries, rebuilt from token strings alone; None for video tokens."""
    ids = tokenizer(text)["input_ids"]
    pieces = [token_bytes(kind, tokenizer, i, text) for i in ids]
    target = text.encode()
    joined = b"".join(pieces)
    if joined != target:  # SentencePiece prepends "▁" to the first piece: a space the text does not have
        assert joined == b" " + target, (joined, target)
        first = next(index for index, piece in enumerate(pieces) if piece)
        assert pieces[first].startswith(b" ")
        pieces[first] = pieces[first][1:]
    video_index = ids.index(tokenizer.convert_tokens_to_ids(VIDEO))
    bounds: list[tuple[int, int] | None] = []
    at = 0
    for index, piece in enumerate(pieces):
        bounds.extend([None] * run if index == video_index else [(at, at + len(piece))])
        at += len(piece)
    return bounds


def byte_range(text: str, a: int, b: int) -> tuple[int, int]:
    return len(text[:a].encode()), len(text[:b].encode())


def expected_spans(kind: str, tokenizer, text: str, char_spans: dict[str, tuple[int, int]], run: int) -> dict[str, Span]:
    """Independent oracle: the first..last token whose bytes overlap each span's bytes."""
    bounds = token_byte_bounds(kind, tokenizer, text, run)
    out = {}
    for name, (a, b) in char_spans.items():
        lo, hi = byte_range(text, a, b)
        carriers = [i for i, bound in enumerate(bounds) if bound and bound[0] < hi and lo < bound[1]]
        out[name] = Span(carriers[0], carriers[-1] + 1)
    return out


def assert_matches_oracle(kind, tokenizer, text, char_spans, spans, run) -> None:
    """Equal to the oracle, except that a span may also hold tokens carrying no text at its edges
    (SentencePiece's prepended "▁" standing alone before a newline: the tokenizer's offsets give it
    the first character)."""
    bounds = token_byte_bounds(kind, tokenizer, text, run)
    want = expected_spans(kind, tokenizer, text, char_spans, run)
    for name, span in spans.items():
        extra = [*range(span.start, want[name].start), *range(want[name].end, span.end)]
        assert span.start <= want[name].start and span.end >= want[name].end, (name, span, want[name])
        assert all(bounds[i] and bounds[i][0] == bounds[i][1] for i in extra), (name, span, want[name])


def assert_covers_exactly(kind, tokenizer, text, char_spans, spans, run) -> None:
    """Every byte of a span lies in a token of its Span; no token outside carries a byte of it."""
    bounds = token_byte_bounds(kind, tokenizer, text, run)
    for name, (a, b) in char_spans.items():
        lo, hi = byte_range(text, a, b)
        span = spans[name]
        inside = [bounds[i] for i in range(span.start, span.end) if bounds[i]]
        for byte in range(lo, hi):
            assert any(s <= byte < e for s, e in inside), f"{name}: byte {byte} of {text!r} is in no covered token"
        for i, bound in enumerate(bounds):
            if bound and not span.start <= i < span.end:
                assert not (bound[0] < hi and lo < bound[1]), f"{name}: token {i} outside carries a span byte"


def aligned(tokenizer, text: str, char_spans: dict[str, tuple[int, int]], run: int = 3) -> dict[str, Span]:
    """The code under test, with the placeholder expanded to `run` tokens as a processor would."""
    ids = tokenizer(text)["input_ids"]
    video_id = tokenizer.convert_tokens_to_ids(VIDEO)
    at = ids.index(video_id)
    import torch

    processed = torch.tensor(ids[:at] + [video_id] * run + ids[at + 1 :])
    return token_spans(tokenizer, text, processed, video_id, char_spans)


def decoded(tokenizer, text: str, span: Span, run: int = 3) -> str:
    ids = tokenizer(text)["input_ids"]
    at = ids.index(tokenizer.convert_tokens_to_ids(VIDEO))
    expanded = ids[:at] + [ids[at]] * run + ids[at + 1 :]
    return tokenizer.decode(expanded[span.start : span.end])


VICUNA = "A chat between a curious user and an artificial intelligence assistant. USER: <video>\n{prompt} ASSISTANT: {answer}"
CHATML = "<|im_start|>user\n<video>\n{prompt}<|im_end|>\n<|im_start|>assistant\n{answer}"


@pytest.mark.parametrize("kind", TOKENIZERS)
@pytest.mark.parametrize("template", [VICUNA, CHATML], ids=["vicuna", "chatml"])
def test_first_word_and_answer_prefix_are_covered(kind, template):
    """The bug of issue 9: " Which" and " Best" start one character before their segment."""
    tokenizer = TOKENIZERS[kind]()
    prompt = multiple_choice_prompt("Which way did the square move?", ["left", "right"], 1)
    text = template.format(prompt=prompt.text, answer="Best option:(")
    char_spans = _character_spans(text, prompt, None, "Best option:(")
    spans = aligned(tokenizer, text, char_spans)
    assert_covers_exactly(kind, tokenizer, text, char_spans, spans, 3)
    assert_matches_oracle(kind, tokenizer, text, char_spans, spans, 3)
    assert decoded(tokenizer, text, spans["question_without_options"]).strip() == "Which way did the square move?"
    assert decoded(tokenizer, text, spans["answer_prompt"]).strip() == "Best option:("
    assert decoded(tokenizer, text, spans["option[B]"]).strip() == "(B) right"
    assert decoded(tokenizer, text, spans["question"]).strip().startswith("Question: Which")
    # The merges are real: the first word and " Best" are single tokens that begin with the space.
    ids = tokenizer(text)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    space = "Ġ" if kind == "byte_level" else "▁"
    if template is VICUNA:
        assert f"{space}Best" in tokens or f"{space}Best{space}option" in "".join(tokens)


def test_both_tokenizers_attach_the_leading_space_to_the_word():
    """Guard that the tokenizers are realistic (words are whole tokens carrying their space)."""
    for kind, build in TOKENIZERS.items():
        tokens = build().tokenize("ASSISTANT: Best option:(")
        assert any(token.endswith("Best") and len(token) == 5 for token in tokens), (kind, tokens)


EDGE = st.sampled_from([" ", "  ", "\n", "\n\n", ".", "?", "!", ",", ":", "(", ")", "-", "'s", "é", "→", "\t"])
WORD = st.sampled_from(["Which", "way", "did", "the", "square", "move", "Best", "option", "left", "right",
                        "ball", "red", "Question", "Options", "once", "x", "42", "a"])
CHUNK = st.lists(st.one_of(WORD, EDGE), min_size=1, max_size=12).map("".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(list(TOKENIZERS)), before=CHUNK, after=CHUNK, cuts=st.data(), run=st.integers(1, 5))
def test_any_span_covers_exactly_the_tokens_carrying_its_characters(kind, before, after, cuts, run):
    """Random text around the placeholder, random spans on either side, against the byte oracle."""
    tokenizer = TOKENIZERS[kind]()
    text = before + VIDEO + after
    char_spans = {}
    for index, (lo, hi) in enumerate([(0, len(before)), (len(before) + len(VIDEO), len(text))]):
        for k in range(2):
            a = cuts.draw(st.integers(lo, hi - 1))
            b = cuts.draw(st.integers(a + 1, hi))
            char_spans[f"s{index}{k}"] = (a, b)
    got = aligned(tokenizer, text, char_spans, run)
    assert_covers_exactly(kind, tokenizer, text, char_spans, got, run)
    assert_matches_oracle(kind, tokenizer, text, char_spans, got, run)


MC_TEXT = st.lists(st.one_of(WORD, EDGE), min_size=1, max_size=8).map("".join).filter(lambda s: s.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(list(TOKENIZERS)),
    template=st.sampled_from([VICUNA, CHATML]),
    question=MC_TEXT,
    options=st.lists(MC_TEXT, min_size=2, max_size=5),
)
def test_multiple_choice_segments_match_the_oracle(kind, template, question, options):
    tokenizer = TOKENIZERS[kind]()
    prompt = multiple_choice_prompt(question, options, 0)
    text = template.format(prompt=prompt.text, answer="Best option:(")
    char_spans = _character_spans(text, prompt, None, "Best option:(")
    got = aligned(tokenizer, text, char_spans)
    assert_covers_exactly(kind, tokenizer, text, char_spans, got, 3)
    assert_matches_oracle(kind, tokenizer, text, char_spans, got, 3)
    assert question.strip() in decoded(tokenizer, text, got["question_without_options"])
    assert decoded(tokenizer, text, got["answer_prompt"]).endswith("Best option:(")
    for letter, option in zip(prompt.option_letters, options):
        assert f"({letter}) {option.strip()}" in decoded(tokenizer, text, got[f"option[{letter}]"])


def test_a_segment_over_the_placeholder_is_refused():
    tokenizer = byte_level_tokenizer()
    text = "look <video> here"
    with pytest.raises(ValueError, match="contains the video placeholder"):
        aligned(tokenizer, text, {"bad": (2, 9)})


def test_end_to_end_on_a_sentencepiece_checkpoint(tmp_path):
    """A saved LLaVA-NeXT-Video with the SentencePiece-style tokenizer, through model.prepare."""
    import tl_video
    from tl_video.testing import save_tiny_llava_next_video

    tokenizer = sentencepiece_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [VIDEO, "<image>"], "pad_token": "<unk>"})
    folder = save_tiny_llava_next_video(tmp_path / "sp", tokenizer=tokenizer, num_hidden_layers=1)
    model = tl_video.HookedVideoTransformer.from_pretrained(folder)
    frames = np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    prepared = model.prepare(video=frames, prompt=multiple_choice_prompt("Which way did the square move?", ["left", "right"], 1),
                             answer_prefix="Best option:(")
    text = lambda name: model.to_string(prepared.tokens[0, prepared.layout.positions(name)])  # noqa: E731
    assert text("question_without_options").strip() == "Which way did the square move?"
    assert text("answer_prompt").strip() == "Best option:("
    assert text("true_option").strip() == "(B) right"


def test_end_to_end_on_the_builtin_model():
    """The built-in model's tokenizer has merges (" Best" is one token): the answer prompt keeps it."""
    import tl_video

    model = tl_video.HookedVideoTransformer.from_pretrained("tl-video/toy-temporal")
    frames = np.random.RandomState(0).randint(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    prepared = model.prepare(video=frames, prompt=multiple_choice_prompt("Which way did the square move?", ["left", "right"], 1),
                             answer_prefix="Best option:(")
    text = lambda name: model.to_string(prepared.tokens[0, prepared.layout.positions(name)])  # noqa: E731
    assert text("answer_prompt") == " Best option:("
    assert text("question_without_options").strip() == "Which way did the square move?"
