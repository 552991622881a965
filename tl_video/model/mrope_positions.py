"""M-RoPE position ids (t, h, w) from token ids alone: the Qwen-VL reference rule.

Qwen2.5-VL and Qwen3-VL give every token three position ids, one per rotary row (t, h, w;
see `rotary.mrope_axis_of_frequency` for which frequencies read which row). The reference rule
(Qwen's `get_rope_index`, transformers <= 5.2) walks the sequence in blocks:

- a run of text tokens gets `next, next + 1, ...` in all three rows;
- a video block starting at `next` gets `next + offset` per token, where the front end stored
  each token's `offset = (t, h, w)` in the video bank at prepare time (extras `"mrope_offsets"`):
  Qwen2.5-VL: `(floor(tubelet * second_per_grid_ts * tokens_per_second), row, col)` over the
  whole video; Qwen3-VL: `(0, row, col)`, each tubelet being its own block between timestamp text;
- after any block, `next = max(every position of the block) + 1`.

A video block is a run of consecutive bank ids of one registered video (ids `k, k+1, ...`), so
Qwen3-VL's tubelets, separated by timestamp text, are separate blocks. transformers 5.24's
Qwen2.5-VL instead continues after a video at `start + max(h, w) / merge`, ignoring the temporal
extent (docs/families.md); this module implements the reference, so parity checks pass these
positions to HF explicitly.

Padding (`attention_mask == 0`) gets position 0 in every row, as HF's `get_rope_index` gives, and
does not advance the count. A continuation (`start`, from a key/value cache: the last position ids
+ 1) starts its first block at `start` (the largest of its rows when [3, batch]).
"""

from __future__ import annotations

import torch
from jaxtyping import Int

from tl_video.model.config import VideoTransformerConfig
from tl_video.model.video_bank import VideoBank

MROPE_OFFSETS = "mrope_offsets"  # video bank extras: [n_banked, 3] (t, h, w) offset within a block


def mrope_position_ids(
    cfg: VideoTransformerConfig,
    tokens: Int[torch.Tensor, "batch pos"],
    video_bank: VideoBank,
    attention_mask: Int[torch.Tensor, "batch pos"] | None = None,
    start: Int[torch.Tensor, "batch"] | Int[torch.Tensor, "3 batch"] | None = None,
) -> Int[torch.Tensor, "3 batch pos"]:
    """(t, h, w) position ids [3, batch, pos] of a token tensor whose video ids are in `video_bank`."""
    batch, length = tokens.shape
    ids = tokens.detach().cpu()
    valid = torch.ones(batch, length, dtype=torch.bool) if attention_mask is None else attention_mask.detach().cpu().bool()
    if valid.shape != ids.shape:
        raise ValueError(f"attention_mask {tuple(valid.shape)} does not match tokens {tuple(ids.shape)}")
    first_positions = _first_positions(start, batch)
    is_video = ids >= cfg.d_vocab
    offsets = video_bank.extras.get(MROPE_OFFSETS)
    video_bank.check(ids)  # stale or foreign video ids raise here, naming the cause
    if bool(is_video.any()) and offsets is None:
        raise ValueError(
            "this model uses M-RoPE but some of its video tokens carry no (t, h, w) offsets; register videos "
            f"through `model.prepare`, or with extras[{MROPE_OFFSETS!r}] (see tl_video.model.mrope_positions)"
        )
    bank = _BankView(video_bank, offsets)
    positions = torch.zeros(3, batch, length, dtype=torch.long)
    for row in range(batch):
        row_ids = ids[row, valid[row]]
        if row_ids.numel() == 0:
            continue
        if start is not None:
            bank.check_continuation(row_ids[0])
        positions[:, row, valid[row]] = _row_positions(row_ids, bank, first_positions[row])
    return positions.to(tokens.device)


class _BankView:
    """The CPU copies of what the rule reads from the bank: offsets, video of each row, first ids."""

    def __init__(self, video_bank: VideoBank, offsets: torch.Tensor | None):
        self.d_vocab = video_bank.d_vocab
        self.rows = video_bank.rows
        self.offsets = None if offsets is None else offsets.detach().cpu().long()
        self.video_index = video_bank.video_index.detach().cpu()
        self.first_ids = {video.first_id for video in video_bank.videos}

    def check_continuation(self, first_token: torch.Tensor) -> None:
        token = int(first_token)
        if token >= self.d_vocab and token not in self.first_ids:
            raise ValueError(
                "a cached prefix ends inside a video: the M-RoPE positions of the rest of that video depend "
                "on where it started; split the input on a text token (e.g. before <|vision_start|>)"
            )


def _first_positions(start: torch.Tensor | int | None, batch: int) -> list[int]:
    if start is None:
        return [0] * batch
    start = torch.as_tensor(start).detach().cpu().long()
    if start.ndim == 2:  # [3, batch]: after a video token the rows differ; text resumes after the largest
        start = start.max(dim=0).values
    start = start.expand(batch) if start.ndim == 0 else start
    if start.shape != (batch,):
        raise ValueError(f"start must be [batch] or [3, batch] with batch={batch}, got {tuple(start.shape)}")
    return start.tolist()


def _row_positions(ids: Int[torch.Tensor, "n"], bank: _BankView, next_position: int) -> Int[torch.Tensor, "3 n"]:
    """Positions of one unpadded row, block by block (text runs and video blocks)."""
    n = ids.shape[0]
    is_video = ids >= bank.d_vocab
    bank_rows = torch.zeros_like(ids).masked_scatter(is_video, bank.rows(ids[is_video]))
    video = torch.where(is_video, bank.video_index[bank_rows] if is_video.any() else bank_rows, -1)
    continues = torch.zeros(n, dtype=torch.bool)  # token i belongs to the block of token i - 1
    both_text = ~is_video[1:] & ~is_video[:-1]
    same_video_block = is_video[1:] & is_video[:-1] & (bank_rows[1:] == bank_rows[:-1] + 1) & (video[1:] == video[:-1])
    continues[1:] = both_text | same_video_block
    starts = torch.nonzero(~continues).flatten().tolist() + [n]
    blocks = []
    for begin, end in zip(starts[:-1], starts[1:]):
        if is_video[begin]:
            block = bank.offsets[bank_rows[begin:end]].T + next_position
        else:
            block = torch.arange(next_position, next_position + end - begin).expand(3, -1)
        blocks.append(block)
        next_position = int(block.max()) + 1
    return torch.cat(blocks, dim=1)
