"""Packing: a batch's rows share sequences, no row attends to another, and a packed step is the
padded step (the real embedded model and a tiny Llama)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import DataCollatorForSeq2Seq

from symgen_datasets.tasks import get_task
from symgen_datasets.training.packing import PackingCollator, attention_probe, pack, packing_is_exact
from symgen_datasets.training.task_model import encode, load_base_model

TASK = get_task("geoquery_sql")
DEMOS = TASK.packaged / "10_shot.jsonl"


def test_first_fit_decreasing_fills_each_sequence_before_opening_another():
    bins = pack([5, 3, 8, 2, 4, 1], 8)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert all(sum([5, 3, 8, 2, 4, 1][i] for i in b) <= 8 for b in bins)
    assert len(bins) == 3  # 23 tokens in sequences of 8
    assert pack([9, 2], 8) == [[0], [1]]  # a row longer than the capacity gets a sequence of its own


def test_the_collator_restarts_positions_per_row_and_pads_in_a_block_of_its_own():
    features = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]},
                {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}]
    batch = PackingCollator(pad_token_id=0, capacity=5)(features)
    assert batch["input_ids"].tolist() == [[6, 7, 8, 9, 0], [1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 8, 9, -100], [-100, 2, 3, -100, 5]]
    assert int(batch["num_tokens"]) == 9 and "attention_mask" not in batch
    # by default short rows share one sequence as long as the batch's rows together
    assert PackingCollator(pad_token_id=0)(features)["input_ids"].shape == (1, 9)


@pytest.fixture(scope="module")
def embedded():
    model, tokenizer, architecture = load_base_model("embedded", task=TASK)
    knowledge = TASK.load_knowledge(TASK.options_with_defaults({}))
    rows = [json.loads(line) for line in DEMOS.read_text().splitlines()]
    examples = [encode(TASK, row, knowledge, tokenizer, architecture, 512, 64) for row in rows]
    return model, tokenizer, examples


def test_a_packed_batch_has_the_padded_batch_s_loss_and_gradients(embedded):
    """The 10 GeoQuery-SQL demonstrations as one batch of the real embedded model: the loss and
    its gradient are the padded batch's (within 1e-4), with a third of the positions computed."""
    model, tokenizer, examples = embedded
    padded = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)(examples)
    packed = PackingCollator(tokenizer.pad_token_id)(examples)
    packed.pop("num_tokens")
    model.eval()  # no dropout: the two computations see the same weights
    losses, grads = [], []
    for batch in (padded, packed):
        model.zero_grad()
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(model.get_input_embeddings().weight.grad.clone())
    model.zero_grad()
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert torch.allclose(grads[0], grads[1], atol=1e-4)
    assert packed["input_ids"].numel() < 0.8 * padded["input_ids"].numel()
    # the check training runs before packing says the same
    exact, difference = packing_is_exact(model, examples, DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100,
                                                                                  padding=True), tokenizer.pad_token_id)
    assert exact and difference < 1e-4


def test_without_position_ids_the_rows_would_attend_to_each_other(embedded):
    """The comparison can fail: the same packed sequence with positions running on (one long row)
    gives another loss."""
    model, tokenizer, examples = embedded
    padded = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)(examples[:4])
    packed = PackingCollator(tokenizer.pad_token_id)(examples[:4])
    packed.pop("num_tokens")
    packed["position_ids"] = torch.arange(packed["input_ids"].shape[1]).unsqueeze(0)
    with torch.no_grad():
        reference = model(**padded, use_cache=False).loss.item()
        leaking = model(**packed, use_cache=False).loss.item()
    assert abs(reference - leaking) > 1e-3


def test_the_check_runs_on_a_layer_of_the_architecture_and_agrees_with_the_whole_model(embedded):
    """The probe (one decoder layer, random weights, same class, attention and dtype) gives the
    whole embedded model's verdict with a fraction of its parameters, and leaves the run's random
    stream as it was; the comparison can fail on the probe too (positions running on)."""
    model, tokenizer, examples = embedded
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    torch.manual_seed(5)
    probe = attention_probe(model)
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))  # building the probe drew nothing from the run's stream
    assert type(probe) is type(model) and probe.config.num_hidden_layers == 1
    assert probe.config._attn_implementation == model.config._attn_implementation and probe.dtype == model.dtype
    assert sum(p.numel() for p in probe.parameters()) < 0.3 * sum(p.numel() for p in model.parameters())
    whole, on_probe = (packing_is_exact(m, examples, collator, tokenizer.pad_token_id) for m in (model, probe))
    assert whole[0] and on_probe[0] and on_probe[1] < 1e-4

    class RunningPositions(PackingCollator):  # positions that do not restart per row: rows attend to each other
        def __call__(self, features):
            batch = super().__call__(features)
            batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
            return batch

    import symgen_datasets.training.packing as packing
    real = packing.PackingCollator
    packing.PackingCollator = RunningPositions
    try:
        leaking = packing_is_exact(probe, examples, collator, tokenizer.pad_token_id)
    finally:
        packing.PackingCollator = real
    assert not leaking[0] and leaking[1] > 1e-3


def test_the_probe_keeps_one_layer_of_each_attention_type():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=5, num_attention_heads=2,
                         num_key_value_heads=2, use_sliding_window=True, sliding_window=8, max_window_layers=2)
    assert config.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 3
    probe = attention_probe(Qwen2ForCausalLM(config))
    assert probe.config.layer_types == ["full_attention", "full_attention", "sliding_attention"]
    assert len(probe.model.layers) == 3


def test_training_packed_ends_where_training_padded_does(tiny, tmp_path):
    from safetensors.torch import load_file

    from symgen_datasets.training import TrainConfig, train

    results = {}
    for packing in (True, False):
        results[packing] = train(TrainConfig(
            dataset=str(DEMOS), output_dir=str(tmp_path / str(packing)), task="geoquery_sql", model=str(tiny["llama"]),
            max_steps=3, per_device_train_batch_size=4, eval_strategy="no", learning_rate=1e-3, packing=packing))
    assert results[True].packing and not results[False].packing
    packed, padded = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("True", "False"))
    assert packed.keys() == padded.keys()
    assert max((packed[k] - padded[k]).abs().max().item() for k in packed) < 1e-4
    card = (tmp_path / "True" / "README.md").read_text()
    assert "| batches | packed: checked: the loss of packed rows equals the padded batch's" in card


def test_a_sequence_to_sequence_model_is_padded_and_the_card_says_why(tiny, tmp_path):
    from symgen_datasets.training import TrainConfig, train

    result = train(TrainConfig(dataset=str(get_task("mtop").packaged / "10_shot.jsonl"), task="mtop",
                               model=str(tiny["t5"]), output_dir=str(tmp_path / "t5"), max_steps=1,
                               per_device_train_batch_size=4, eval_strategy="no"))
    assert not result.packing
    assert "| batches | padding: packing is for causal LMs |" in (tmp_path / "t5" / "README.md").read_text()
