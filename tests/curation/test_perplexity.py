import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation.models import ModelUnavailableError
from curation.packed_lm import FalconAlibiBackbone, PaddedBackbone, PositionIdsBackbone, build_rows
from curation.perplexity import PerplexityConfig, pack_rows, plan_batches, split_windows
from curation.perplexity_model import PerplexityScorer, token_nll
from examples.assets import tiny_falcon_config

DEMO_LM = Path(__file__).resolve().parents[2] / "examples" / "models" / "tiny-falcon"  # trained on English prose

PROSE = (
    "Assignment statements are used to bind names to values and to modify attributes or items of mutable objects. "
    "A function definition is an executable statement; its execution binds the function name in the current "
    "local namespace to a function object. Modules are objects that hold names and definitions, and the import "
    "statement finds a module, loads and initializes it if necessary, and defines a name in the local namespace."
)
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    PROSE,
    "zxq vbn qqq lkj wpt rrr ooo iii",
    "Short.",
    "",
    " ".join([PROSE] * 6),  # several windows
    "Exceptions are raised when errors are detected; a try statement specifies handlers for a group of statements.",
]

# (nll_sum, n_tokens) per text from the scorer before packing (one padded window per row, full fp32
# logits; commit 7b848cd), on the demo LM.
PADDED_SCORER_RESULTS = {
    "context": [
        (170.00559997558594, 22), (370.8165588378906, 89), (269.4525146484375, 22), (38.87835693359375, 4), (0.0, 0),
        (2470.7677307128906, 539), (117.06364440917969, 22),
    ],
    "windows": [
        (170.00559997558594, 22), (391.0312957763672, 89), (269.4525146484375, 22), (38.87835693359375, 4), (0.0, 0),
        (2514.7192993164062, 539), (117.06364440917969, 22),
    ],
    "truncate": [
        (170.00559997558594, 22), (263.784912109375, 63), (269.4525146484375, 22), (38.87835693359375, 4), (0.0, 0),
        (263.784912109375, 63), (117.06364440917969, 22),
    ],
}  # fmt: skip
SETTINGS: dict[str, dict[str, Any]] = {
    "context": {},
    "windows": {"max_length": 64},
    "truncate": {"max_length": 64, "long_docs": "truncate"},
}


def naive_nll(model, tokenizer, text, max_length, truncate=False):
    """Plain transformers, one window per forward pass: (sum of NLL over [eos] + tokens, tokens scored)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    window = max_length - 1
    total, count = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = torch.tensor([[tokenizer.eos_token_id] + ids[start : start + window]])
        with torch.no_grad():
            loss = model(chunk, labels=chunk).loss.item()
        total += loss * (chunk.shape[1] - 1)
        count += chunk.shape[1] - 1
        if truncate:
            break
    return total, count


def perplexities(scores):
    return [math.exp(nll / n) if n else float("nan") for nll, n in scores]


def assert_same_scores(ours, reference):
    assert [s.n_tokens for s in ours] == [n for _, n in reference]
    assert [s.perplexity for s in ours] == pytest.approx(perplexities(reference), rel=1e-5, nan_ok=True)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("batch_tokens", [64, 8192])
def test_packed_scores_equal_the_padded_scorer_before_packing(setting, batch_tokens):
    scorer = PerplexityScorer.load(PerplexityConfig(model=str(DEMO_LM), batch_tokens=batch_tokens, **SETTINGS[setting]))
    assert isinstance(scorer.backbone, FalconAlibiBackbone)
    assert_same_scores(scorer.score_texts(TEXTS), PADDED_SCORER_RESULTS[setting])


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
@pytest.mark.parametrize("max_length,long_docs", [(32, "windows"), (16, "truncate"), (64, "windows")])
def test_packed_scores_equal_a_plain_transformers_loop(tiny_lm, attention, max_length, long_docs):
    config = PerplexityConfig(model=str(tiny_lm), batch_tokens=128, max_length=max_length, long_docs=long_docs, attention=attention)
    scorer = PerplexityScorer.load(config)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    reference = [naive_nll(model, tokenizer, t, max_length, long_docs == "truncate") for t in TEXTS]
    assert_same_scores(scorer.score_texts(TEXTS), reference)


@pytest.mark.parametrize("attention", ["sdpa", "flex"])
def test_a_sequence_packed_after_a_long_one_is_computed_as_alone(attention):
    """32 heads as Falcon-RW-1B: transformers' own packed path rounds ALiBi at the row position (logits off by
    0.36 here); ours computes the bias at the position within the sequence."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_falcon_config(1000, hidden_size=256, layers=2, heads=32, context=2048))
    model.eval()
    first, second = torch.randint(1, 1000, (700,)).tolist(), torch.randint(1, 1000, (200,)).tolist()
    rows = build_rows([[0, 1]], [first, second], [0, 1], 908, 1, 0, "cpu")  # 8 padding tokens at the end
    with torch.no_grad():
        alone = model(torch.tensor([second]), use_cache=False).logits[0]
        packed = model.lm_head(FalconAlibiBackbone(model, attention, compile=False)(rows)[0, 700:900])
    torch.testing.assert_close(packed, alone, rtol=0, atol=2e-5)


def tiny_model(family: str, vocab: int):
    from transformers import AutoConfig

    shape = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    if family == "falcon-rotary":
        config = tiny_falcon_config(vocab, hidden_size=32, layers=2, heads=4, context=64)
        config.alibi = False
    elif family == "gpt2":
        config = AutoConfig.for_model("gpt2", vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    else:
        config = AutoConfig.for_model(family, intermediate_size=64, num_key_value_heads=2, head_dim=8, **shape)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


@pytest.mark.parametrize(
    "family,backbone",
    [
        ("falcon-rotary", PositionIdsBackbone),
        ("llama", PositionIdsBackbone),
        ("mistral", PositionIdsBackbone),
        ("qwen2", PositionIdsBackbone),
        ("qwen3", PositionIdsBackbone),
        ("gpt2", PaddedBackbone),  # not known to isolate packed sequences: one window per row
    ],
)
def test_other_architectures_score_as_a_plain_transformers_loop(tiny_lm, family, backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    model = tiny_model(family, len(tokenizer))
    reference = [naive_nll(model, tokenizer, t, 32) for t in TEXTS]
    scorer = PerplexityScorer(model, tokenizer, PerplexityConfig(max_length=32, batch_tokens=96, device="cpu"))
    assert isinstance(scorer.backbone, backbone)
    assert_same_scores(scorer.score_texts(TEXTS), reference)


def test_the_chunked_head_equals_cross_entropy_over_full_logits():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 97, bias=False)
    hidden, targets = torch.randn(50, 16), torch.randint(0, 97, (50,))
    expected = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="none")
    for chunk in (1, 7, 50, 64):
        torch.testing.assert_close(token_nll(hidden, head, targets, chunk), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_compiled_scorer_runs_fixed_shapes_and_gives_the_same_scores(tiny_lm):
    eager = PerplexityScorer.load(PerplexityConfig(model=str(tiny_lm), max_length=32, batch_tokens=96))
    compiled = PerplexityScorer.load(PerplexityConfig(model=str(tiny_lm), max_length=32, batch_tokens=96, compile=True))
    assert compiled.static_shapes and not eager.static_shapes
    shapes = [(len(rows), width, n_rows) for rows, width, n_rows in compiled._batches([5, 32, 9, 20, 31])]
    assert {(w, n) for _, w, n in shapes} == {(32, 3)}
    ours = compiled.score_texts(TEXTS)
    assert [s.perplexity for s in ours] == pytest.approx([s.perplexity for s in eager.score_texts(TEXTS)], rel=1e-5, nan_ok=True)


def test_truncate_scores_only_the_first_window(tiny_lm):
    scorer = PerplexityScorer.load(PerplexityConfig(model=str(tiny_lm), max_length=16, long_docs="truncate"))
    score = scorer.score_texts([TEXTS[-2]])[0]
    assert score.n_tokens == 15


def test_windows_and_batches():
    assert split_windows([1, 2, 3, 4, 5], 0, 2, truncate=False) == [[0, 1, 2], [0, 3, 4], [0, 5]]
    assert split_windows([], 0, 2, truncate=False) == []  # nothing to score
    assert split_windows([1, 2, 3], None, 2, truncate=True) == [[1, 2]]
    batches = plan_batches([5, 100, 7, 100, 3], batch_tokens=200)
    assert batches == [[1, 3], [2, 0, 4]]
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]


def test_rows_are_packed_best_fit_longest_first():
    lengths = [10, 3, 7, 2, 6, 4, 10, 8]
    rows = pack_rows(lengths, capacity=10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert rows == [[0], [6], [7, 3], [2, 1], [4, 5]]  # the 8 gets the 2, the 7 the 3, the 6 the 4
    with pytest.raises(ValueError, match="more than the row capacity"):
        pack_rows([11], capacity=10)


def test_packed_rows_index_only_real_tokens():
    rows = build_rows([[1, 0], [2]], [[7, 8, 9], [5, 6], [4, 3, 2, 1]], [0, 0, 1], 6, 3, 0, "cpu")
    assert rows.input_ids.tolist() == [[5, 6, 7, 8, 9, 0], [4, 3, 2, 1, 0, 0], [0] * 6]
    assert rows.positions.tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1], list(range(6))]
    assert rows.segments.tolist() == [[0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 1, 1], [0] * 6]
    assert rows.scored.tolist() == [0, 2, 3, 6, 7, 8]
    assert rows.targets.tolist() == [6, 8, 9, 3, 2, 1]
    assert rows.owners.tolist() == [0, 0, 0, 1, 1, 1]


def test_missing_model_names_the_flag(tmp_path):
    with pytest.raises(ModelUnavailableError, match="--ppl-model"):
        PerplexityScorer.load(PerplexityConfig(model=str(tmp_path / "nope")))
