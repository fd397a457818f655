"""Packing: a batch's rows concatenated into a few sequences instead of each padded to the
longest, with no row attending to another.

A padded batch of B rows computes B x (longest row) positions; on GeoQuery-SQL rows run from 100
to 900 tokens, so most of them are padding. :class:`PackingCollator` places the same B rows
(first-fit decreasing) into as few sequences of the longest row's length as they fit in, and
gives each row position ids that restart at 0. transformers (``masking_utils``: a causal mask
from ``position_ids`` when no ``attention_mask`` is passed, as for ``DataCollatorWithFlattening``)
then builds a block-diagonal causal mask, and FlashAttention's varlen kernels do the same on GPU:
no token attends across a row boundary. The loss is the mean over the same target tokens as the
padded batch, so a packed step is the padded step, with fewer positions computed.

Whether a model's attention honours per-row position ids is checked, not assumed
(:func:`packing_is_exact`, run on :func:`attention_probe`, a one-layer copy of the architecture):
the loss of a few rows packed and padded must agree, else training falls back to padding and
says why.
"""

from __future__ import annotations

from typing import Sequence

import torch


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the indices of ``lengths`` grouped into bins whose lengths sum to at
    most ``capacity`` (a longer item gets a bin of its own). Deterministic: ties keep their order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, left in enumerate(room):
            if lengths[i] <= left:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


#: Packed sequences are at least this long when the batch's rows add up to it (so that short rows
#: share one sequence), else as long as the batch's rows together.
PACKED_LENGTH = 1024


class PackingCollator:
    """Collates causal-LM examples (``input_ids``, ``labels``) into packed sequences.

    The batch's rows are packed (:func:`pack`) into sequences of ``max(longest row,
    min(capacity, the rows' total))`` tokens; each sequence is the rows' tokens one after the
    other, then padding to that length. Returns ``input_ids``, ``labels`` (-100 on padding) and
    ``position_ids`` (restarting at 0 for each row, and for the padding, which is thus a block of
    its own), shape ``[sequences, length]``, no ``attention_mask`` (which would turn off
    transformers' packed-sequence mask), and ``num_tokens`` (the rows' tokens, padding excluded;
    not a model input: the training loop pops it).

    Args:
        pad_token_id: the token put in the padding positions (never attended to by a row, never
            in the loss).
        capacity: the sequences' length, :data:`PACKED_LENGTH` by default.
    """

    def __init__(self, pad_token_id: int, capacity: int = PACKED_LENGTH):
        self.pad_token_id = pad_token_id
        self.capacity = capacity

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        capacity = max(max(lengths), min(self.capacity, sum(lengths)))
        input_ids, labels, positions = [], [], []
        for group in pack(lengths, capacity):
            ids, lab, pos = [], [], []
            for i in sorted(group):  # rows in batch order within a sequence
                ids += list(features[i]["input_ids"])
                lab += list(features[i]["labels"])
                pos += list(range(lengths[i]))
            padding = capacity - len(ids)
            input_ids.append(ids + [self.pad_token_id] * padding)
            labels.append(lab + [-100] * padding)
            positions.append(pos + list(range(padding)))
        return {"input_ids": torch.tensor(input_ids), "labels": torch.tensor(labels),
                "position_ids": torch.tensor(positions), "num_tokens": torch.tensor(sum(lengths))}


def packing_is_exact(model, examples: Sequence[dict], padded_collator, pad_token_id: int,
                     tolerance: float = 1e-4) -> tuple[bool, float]:
    """Whether the model gives a packed batch the loss of the same rows padded: its attention
    honours per-row position ids on this device.

    Args:
        model: the causal LM (any device; put in eval mode for the check, then restored).
        examples: a few training examples (the shortest ones are used, so the check is cheap;
            at least two make a packed sequence).
        padded_collator: the collator of the padded batch (with ``attention_mask``).
        tolerance: the largest absolute loss difference accepted.

    Returns:
        ``(exact, difference)``.
    """
    chosen = sorted(examples, key=lambda e: len(e["input_ids"]))[:4]
    if len(chosen) < 2:
        return True, 0.0
    lengths = [len(e["input_ids"]) for e in chosen]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            def loss(batch: dict) -> float:
                batch.pop("num_tokens", None)
                return model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).loss.float().item()

            reference = loss(padded_collator(chosen))
            # all the rows in one sequence, then sequences of the longest row (two rows share one, the others padded)
            differences = [abs(loss(PackingCollator(pad_token_id)(chosen)) - reference),
                           abs(loss(PackingCollator(pad_token_id, 1)(chosen)) - reference)]
    finally:
        model.train(was_training)
    difference = max(differences)
    return difference <= tolerance, difference


def attention_probe(model):
    """A small randomly initialised copy of ``model``'s architecture for :func:`packing_is_exact`:
    the same class, attention implementation and dtype, with only the decoder layers needed to
    hold one layer of each attention type (``config.layer_types``, e.g. sliding and full; one
    layer where the config has none).

    Whether packing is exact depends on how attention treats per-row position ids, not on the
    weights, so the check runs on the probe and never puts a whole model on a device before it is
    sharded (a 32B model under FSDP would not fit). Built under ``torch.random.fork_rng``: the
    run's random stream is left as it was.

    Args:
        model: a causal LM, or a peft model around one.

    Returns:
        The probe (on CPU), or ``None`` when the architecture cannot be cut this way (check the
        model itself then).
    """
    import copy

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(base.config)
    types = list(getattr(config, "layer_types", None) or [])
    layers = max(types.index(kind) for kind in set(types)) + 1 if types else 1
    try:
        config.num_hidden_layers = layers
        if types:
            config.layer_types = types[:layers]
        with torch.random.fork_rng(devices=[]):
            return type(base)._from_config(config, attn_implementation=base.config._attn_implementation,
                                           dtype=next(base.parameters()).dtype)
    except Exception:  # noqa: BLE001 - a config that cannot be cut: the caller checks the model itself
        return None
