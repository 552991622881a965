"""A byte-level BPE tokenizer built offline: 256 byte tokens, no merges, named specials."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import TokenizersBackend
from transformers.convert_slow_tokenizer import bytes_to_unicode


def build_byte_tokenizer(
    special_tokens: dict[str, str],
    extra_special_tokens: list[str] = (),
    chat_template: str | None = None,
) -> TokenizersBackend:
    """Return a tokenizer whose ids 0..255 are bytes and whose specials follow them.

    `special_tokens` maps HF roles (`bos_token`, `eos_token`, `pad_token`, `unk_token`)
    to token strings; `extra_special_tokens` are further atomic tokens (e.g. `<video>`).
    """
    byte_vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    model = models.BPE(vocab=byte_vocab, merges=[], byte_fallback=False)
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    ordered_specials = list(dict.fromkeys([*special_tokens.values(), *extra_special_tokens]))
    backend.add_special_tokens(ordered_specials)
    tokenizer = TokenizersBackend(tokenizer_object=backend, **special_tokens)
    if extra_special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
