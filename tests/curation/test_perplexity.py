import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curation.models import ModelUnavailableError
from curation.perplexity import PerplexityConfig, plan_batches, split_windows
from curation.perplexity_model import PerplexityScorer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A function definition is an executable statement.",
    "zxq vbn qqq lkj",
    "Short.",
    " ".join(["Modules are objects that hold names and definitions."] * 12),  # longer than one window
]


def naive_perplexity(path, text, max_length=None):
    """Straightforward transformers: one document at a time, loss over [eos] + tokens (windows if asked)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    window = (max_length or len(ids) + 1) - 1
    total, count = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = [tokenizer.eos_token_id] + ids[start : start + window]
        with torch.no_grad():
            loss = model(torch.tensor([chunk]), labels=torch.tensor([chunk])).loss.item()
        total += loss * (len(chunk) - 1)
        count += len(chunk) - 1
    return math.exp(total / count)


@pytest.mark.parametrize("batch_tokens", [64, 4096])
def test_batched_scores_equal_a_naive_transformers_loop(tiny_lm, batch_tokens):
    scorer = PerplexityScorer.load(PerplexityConfig(model=str(tiny_lm), batch_tokens=batch_tokens, max_length=32))
    ours = [s.perplexity for s in scorer.score_texts(TEXTS)]
    reference = [naive_perplexity(tiny_lm, t, max_length=32) for t in TEXTS]
    assert ours == pytest.approx(reference, rel=1e-4)


def test_truncate_scores_only_the_first_window(tiny_lm):
    scorer = PerplexityScorer.load(PerplexityConfig(model=str(tiny_lm), max_length=16, long_docs="truncate"))
    score = scorer.score_texts([TEXTS[-1]])[0]
    assert score.n_tokens == 15


def test_windows_and_batches():
    assert split_windows([1, 2, 3, 4, 5], 0, 2, truncate=False) == [[0, 1, 2], [0, 3, 4], [0, 5]]
    assert split_windows([], 0, 2, truncate=False) == []  # nothing to score
    assert split_windows([1, 2, 3], None, 2, truncate=True) == [[1, 2]]
    batches = plan_batches([5, 100, 7, 100, 3], batch_tokens=200)
    assert batches == [[1, 3], [2, 0, 4]]
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]


def test_missing_model_names_the_flag(tmp_path):
    with pytest.raises(ModelUnavailableError, match="--ppl-model"):
        PerplexityScorer.load(PerplexityConfig(model=str(tmp_path / "nope")))
