"""Assistant-only targets and packing: the label-bearing tokens of a packed batch are exactly the
assistant replies plus their end-of-turn token, and an example's logits are the same packed or alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalsuite.trainers import packing

from evalsuite.chat_template import CHATML_TEMPLATE

CONVS = [
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"},
     {"role": "assistant", "content": "Rome, on the Tiber."}],
    [{"role": "user", "content": "Say <|im_start|> literally? No. Count to three."},
     {"role": "assistant", "content": "1, 2, 3"}],
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A small model."},
     {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You are welcome!"},
     {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye."}],
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _examples(tokenizer, template: str = CHATML_TEMPLATE) -> list[packing.Example]:
    out = []
    for conv in CONVS:
        ids, trained = packing.tokenize(tokenizer, conv, template, add_bos=False)
        ex = packing.make_example(ids, trained, 512, "truncate")
        assert ex is not None
        out.append(ex)
    return out


@pytest.mark.parametrize("own_template", [False, True])
def test_packed_labels_are_exactly_the_assistant_replies(tokenizer, own_template: bool) -> None:
    template = tokenizer.chat_template if own_template else CHATML_TEMPLATE
    examples = _examples(tokenizer, template)
    batches = list(packing.pack(iter(examples), rows=1, row_len=512, packing=True))
    assert len(batches) == 1 and len(batches[0][0]) == 3  # all three in one row: really packed
    t = packing.collate(batches[0], tokenizer.pad_token_id)
    labelled = [int(x) for x in t["targets"][0] if x != packing.IGNORE]
    expected = "".join(m["content"] + "<|im_end|>" for c in CONVS for m in c if m["role"] == "assistant")
    assert tokenizer.decode(labelled) == expected
    # and each label is the *next* input token of its own example (shifted, never across a boundary)
    ids, tgt, pos = t["input_ids"][0], t["targets"][0], t["position_ids"][0]
    for i in range(len(ids) - 1):
        if tgt[i] != packing.IGNORE:
            assert tgt[i] == ids[i + 1] and pos[i + 1] == pos[i] + 1
    starts = [i for i in range(len(pos)) if pos[i] == 0]
    assert len(starts) == 3 and all(tgt[s - 1] == packing.IGNORE for s in starts[1:])


def test_padding_and_truncation(tokenizer) -> None:
    ids, trained = packing.tokenize(tokenizer, CONVS[0], CHATML_TEMPLATE, add_bos=True)
    assert ids[0] == tokenizer.bos_token_id and not trained[0]
    assert packing.make_example(ids, trained, 10, "drop") is None
    assert packing.make_example(ids, trained, 10, "truncate") is None  # the cut left no reply token
    cut = packing.make_example(ids, trained, len(ids) - 3, "truncate")
    assert cut is not None and len(cut) == len(ids) - 3 and cut.targets[-1] == packing.IGNORE
    # without packing, one example per row; rows padded with positions from 0 and no targets
    examples = _examples(tokenizer)
    batch = next(packing.pack(iter(examples), rows=3, row_len=512, packing=False))
    assert [len(r) for r in batch] == [1, 1, 1]
    t = packing.collate(batch, tokenizer.pad_token_id)
    short = min(range(3), key=lambda r: len(examples[r]))
    n = len(examples[short])
    assert t["position_ids"][short, n].item() == 0
    assert (t["targets"][short, n:] == packing.IGNORE).all()


def test_first_fit_packing_respects_row_length(tokenizer) -> None:
    examples = _examples(tokenizer) * 5
    width = max(len(e) for e in examples) + min(len(e) for e in examples)
    batches = list(packing.pack(iter(examples), rows=2, row_len=width, packing=True))
    seen = [e for b in batches for r in b for e in r]
    assert len(seen) == len(examples)  # nothing lost or duplicated
    assert all(sum(len(e) for e in r) <= width for b in batches for r in b)
    assert any(len(r) > 1 for b in batches for r in b)


def _tiny_gemma3(tokenizer, attn: str):
    """A random 2-layer Gemma 3 (one sliding-window layer, window 8): the base model family of the
    README's demo, whose sliding layers must also keep attention inside each packed example."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=2048,
                           attn_implementation=attn)
    return Gemma3ForCausalLM(cfg).eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logits_packed_equal_logits_alone(tiny_model_dir: Path, tokenizer, attn: str, arch: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    else:
        model = _tiny_gemma3(tokenizer, attn)
    examples = _examples(tokenizer)
    batch = [[examples[0], examples[1]], [examples[2]]]  # two packed in row 0, row 1 padded
    t = packing.collate(batch, tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=t["input_ids"], position_ids=t["position_ids"], use_cache=False).logits
        offset = 0
        for row, ex in [(0, examples[0]), (0, examples[1]), (1, examples[2])]:
            if row == 1:
                offset = 0
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            got = packed[row, offset : offset + len(ex)]
            assert torch.allclose(got, alone, atol=1e-4), (arch, attn, row, (got - alone).abs().max())
            offset += len(ex)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_loss_over_targets_matches_per_example_loss(tiny_model_dir: Path, tokenizer, arch: str) -> None:
    """The trainer's loss (logits only at targets, packed) == the sum of each example's own loss."""
    import torch
    import torch.nn.functional as F
    from evalsuite.trainers.recipe import token_loss_sum
    from transformers import AutoModelForCausalLM

    if arch == "llama":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    else:
        model = _tiny_gemma3(tokenizer, "sdpa")
    examples = _examples(tokenizer)
    t = packing.collate([examples], tokenizer.pad_token_id)
    with torch.no_grad():
        packed = token_loss_sum(model, t, "cpu").item()
        alone = 0.0
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            alone += F.cross_entropy(logits, torch.tensor(ex.targets), ignore_index=packing.IGNORE, reduction="sum").item()
    assert packed == pytest.approx(alone, rel=1e-5)


def test_template_that_is_not_incremental_is_refused(tokenizer) -> None:
    from evalsuite.errors import UsageError

    # renders the last message first: a prefix of the conversation is not a prefix of the text
    bad = "{% for m in messages|reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(UsageError, match="incrementally"):
        packing.tokenize(tokenizer, CONVS[0], bad, add_bos=False)


def test_lookahead_fills_rows_and_keeps_every_example_once() -> None:
    """An example that fits no row waits for the next batch while later short ones fill the gap."""
    mk = lambda n, tag: packing.Example([tag] * n, [tag] * n)
    stream = [mk(5, 1), mk(6, 2), mk(5, 3), mk(6, 4)]
    tags = lambda bs: [[e.input_ids[0] for e in b[0]] for b in bs]
    batches = list(packing.pack(iter(stream), rows=1, row_len=10, packing=True))
    assert tags(batches) == [[1, 3], [2], [4]]
    plain = list(packing.pack(iter(stream), rows=1, row_len=10, packing=True, lookahead=0))
    assert tags(plain) == [[1], [2], [3], [4]]  # plain first-fit: a fourth, emptier row
    assert list(packing.pack(iter(stream), rows=1, row_len=10, packing=True)) == batches  # deterministic
    unpacked = list(packing.pack(iter(stream), rows=2, row_len=10, packing=False))
    assert [[r[0].input_ids[0] for r in b] for b in unpacked] == [[1, 2], [3, 4]]  # in order
