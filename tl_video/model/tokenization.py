"""String <-> token helpers that TransformerLens users expect, aware of banked video ids."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int


class TokenizationMixin:
    """to_tokens / to_string / to_str_tokens / to_single_token for HookedVideoTransformer."""

    tokenizer: Any

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; load it with from_pretrained or pass tokenizer=")
        return self.tokenizer

    def to_tokens(
        self, text: str | list[str], prepend_bos: bool | None = None, padding_side: str = "left"
    ) -> Int[torch.Tensor, "batch pos"]:
        """Tokenize text (no chat template, no video; see `prepare` for those).

        `prepend_bos` defaults to `cfg.default_prepend_bos`; a batch is padded on `padding_side`.
        """
        tokenizer = self._require_tokenizer()
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(
                f"to_tokens takes a string or a non-empty list of strings, got {type(text).__name__} "
                f"{[type(t).__name__ for t in texts][:4] if texts else '(empty)'}"
            )
        prepend = self.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
        rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        if prepend and tokenizer.bos_token_id is not None:
            rows = [[tokenizer.bos_token_id, *row] for row in rows]
        width = max(len(row) for row in rows)
        pad = tokenizer.pad_token_id
        if pad is None and any(len(row) != width for row in rows):
            raise ValueError(
                "these texts have different lengths but the tokenizer has no pad token, so padding would use a real "
                "token id; set model.tokenizer.pad_token (e.g. to its eos_token) or tokenize the texts one by one"
            )
        padded = [
            ([pad] * (width - len(row)) + row) if padding_side == "left" else (row + [pad] * (width - len(row)))
            for row in rows
        ]
        return torch.tensor(padded, dtype=torch.long, device=self.cfg.device)

    def to_str_tokens(self, tokens: Any) -> list[str] | list[list[str]]:
        """One string per token; a video token reads `<video f{frame} r{row} c{col}>`."""
        tokenizer = self._require_tokenizer()
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens)
        tokens = self._as_ids(tokens)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                return [self.to_str_tokens(row) for row in tokens]
            tokens = tokens[0]
        is_video = self.video_bank.is_video(tokens)
        grid = self.video_bank.grid.cpu()[self.video_bank.rows(tokens[is_video]).cpu()].tolist()
        video_cells = iter(grid)
        out = []
        for token, video in zip(tokens.tolist(), is_video.tolist()):
            if video:
                frame, row, col = next(video_cells)
                out.append(f"<video f{frame} r{row} c{col}>")
            else:
                out.append(tokenizer.decode([token]))
        return out

    def _as_ids(self, tokens: Any) -> Int[torch.Tensor, "..."]:
        """Token ids as a CPU long tensor [pos] or [batch, pos]; video ids must be in this model's bank."""
        tokens = torch.as_tensor(tokens)
        if tokens.dtype.is_floating_point or tokens.dtype in (torch.bool, torch.uint8) or tokens.ndim > 2:
            raise TypeError(
                f"expected integer token ids [pos] or [batch, pos], got a {tokens.dtype} tensor of shape "
                f"{tuple(tokens.shape)}; pass ids as torch.long"
            )
        tokens = tokens.detach().cpu().long().reshape(-1) if tokens.ndim == 0 else tokens.detach().cpu().long()
        if tokens.numel() and int(tokens.min()) < 0:
            raise ValueError(f"token ids must be >= 0, got {int(tokens.min())}")
        self.video_bank.check(tokens)
        return tokens

    def to_string(self, tokens: Any) -> str | list[str]:
        """Decode tokens; each run of video tokens reads `<video x N>`."""
        tokenizer = self._require_tokenizer()
        tokens = self._as_ids(tokens)
        if tokens.ndim == 2:
            return [self.to_string(row) for row in tokens]
        pieces: list[str] = []
        text_run: list[int] = []
        video_run = 0
        for token in tokens.tolist() + [None]:
            is_video = token is not None and token >= self.cfg.d_vocab
            if (is_video or token is None) and text_run:
                pieces.append(tokenizer.decode(text_run))
                text_run = []
            if (not is_video or token is None) and video_run:
                pieces.append(f"<video x {video_run}>")
                video_run = 0
            if token is None:
                break
            if is_video:
                video_run += 1
            else:
                text_run.append(token)
        return "".join(pieces)

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token; otherwise a ValueError naming the pieces."""
        tokenizer = self._require_tokenizer()
        if not isinstance(string, str):
            raise TypeError(f"to_single_token takes a string, got {type(string).__name__} {string!r}")
        ids = tokenizer.encode(string, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            raise ValueError(f"{string!r} is {len(ids)} tokens {pieces}, not a single token")
        return ids[0]
