"""Mixture arithmetic: achieved answer-token shares land within 0.5 points of the targets."""

import json

import numpy as np
import pytest
from PIL import Image

from cauldron.mixture import answer_token_counts, load_mixture, parse_mixture, plan_mixture, plot_mixture
from cauldron.schema import CauldronRow


def generated_counts(seed, sizes):
    """Answer tokens per row with a heavy tail, as real sets have (short answers, some long ones)."""
    rng = np.random.default_rng(seed)
    return {
        name: (rng.lognormal(mean=2.5 + (k % 4), sigma=1.0, size=size) + 1).astype(np.int64) for k, (name, size) in enumerate(sizes.items())
    }


def test_table14_mixture_on_generated_data_hits_every_share():
    mixture = load_mixture()
    rng = np.random.default_rng(1)
    sizes = {name: int(rng.integers(50, 3000)) for name in mixture.shares}
    counts = generated_counts(2, sizes)
    plan = plan_mixture(mixture, counts, seed=0)
    assert plan.missing == [] and plan.unused == []
    worst = max(abs(e["achieved_percent"] - e["target_percent"]) for e in plan.report())
    assert worst < 0.5
    # the factors really up- and down-sample: some sets repeat, some are cut
    factors = [e["factor"] for e in plan.report()]
    assert max(factors) > 1.5 and min(factors) < 0.5
    for name, dataset in plan.datasets.items():
        assert dataset.selected_tokens == int((dataset.multiplicity * counts[name]).sum())


def test_small_mixture_with_budget_and_missing_sets():
    mixture = parse_mixture({"name": "tiny", "unit": "weight", "datasets": {"a": 3, "b": 1, "c": 1, "absent": 5}})
    counts = generated_counts(3, {"a": 400, "b": 5000, "c": 120, "extra": 10})
    plan = plan_mixture(mixture, counts, total_tokens=200_000, seed=4)
    assert plan.missing == ["absent"] and plan.unused == ["extra"]
    shares = {e["dataset"]: e for e in plan.report()}
    assert shares["a"]["target_percent"] == pytest.approx(60.0)
    for entry in shares.values():
        assert abs(entry["achieved_percent"] - entry["target_percent"]) < 0.5
    assert abs(plan.selected_tokens - 200_000) < 0.01 * 200_000
    assert shares["c"]["rows_out"] > shares["c"]["rows_in"]  # repeated
    assert shares["b"]["rows_out"] < shares["b"]["rows_in"]  # sub-sampled
    assert "absent" in plan.format_table()


def test_plans_are_deterministic_under_a_seed():
    mixture = parse_mixture({"datasets": {"a": 50, "b": 50}})
    counts = generated_counts(5, {"a": 1000, "b": 300})
    first, again = plan_mixture(mixture, counts, seed=7), plan_mixture(mixture, counts, seed=7)
    other = plan_mixture(mixture, counts, seed=8)
    for name in ("a", "b"):
        assert np.array_equal(first.datasets[name].multiplicity, again.datasets[name].multiplicity)
    assert not np.array_equal(first.datasets["a"].multiplicity, other.datasets["a"].multiplicity)


def test_answer_tokens_counted_with_a_tokenizer(bare_tokenizer):
    rows: list[CauldronRow] = [
        {
            "images": [],
            "texts": [
                {"user": "ignored words here", "assistant": "The value is returned.", "source": "x"},
                {"user": "more", "assistant": "None.", "source": "x"},
            ],
        },
        {"images": [], "texts": [{"user": "q", "assistant": "", "source": "x"}]},
    ]
    expected = [
        len(bare_tokenizer.encode("The value is returned.", add_special_tokens=False).ids)
        + len(bare_tokenizer.encode("None.", add_special_tokens=False).ids),
        0,
    ]
    assert answer_token_counts(rows, bare_tokenizer, batch_size=1).tolist() == expected
    assert answer_token_counts(rows, bare_tokenizer).tolist() == expected


def test_report_json_and_bar_chart(tmp_path):
    mixture = parse_mixture({"name": "demo", "datasets": {"a": 70, "b": 30}})
    plan = plan_mixture(mixture, generated_counts(6, {"a": 200, "b": 200}), seed=0)
    report = json.loads(plan.to_json())
    assert report["mixture"] == "demo" and [d["dataset"] for d in report["datasets"]] == ["a", "b"]
    plot_mixture(plan, tmp_path / "mixture.png")
    with Image.open(tmp_path / "mixture.png") as chart:
        assert chart.format == "PNG" and chart.width > 300


def test_invalid_mixtures_are_refused():
    with pytest.raises(ValueError):
        parse_mixture({"datasets": {}})
    with pytest.raises(ValueError):
        parse_mixture({"datasets": {"a": -1}})
    with pytest.raises(ValueError, match="none of the mixture"):
        plan_mixture(parse_mixture({"datasets": {"a": 1}}), {"b": [3]})
    with pytest.raises(ValueError, match="no answer tokens"):
        plan_mixture(parse_mixture({"datasets": {"a": 1}}), {"a": [0, 0]})


def test_a_local_tokenizer_counts_as_transformers_counts(tmp_path, bare_tokenizer):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from cauldron.mixture import load_tokenizer

    PreTrainedTokenizerFast(tokenizer_object=bare_tokenizer, unk_token="<unk>").save_pretrained(tmp_path)
    light, full = load_tokenizer(str(tmp_path)), AutoTokenizer.from_pretrained(tmp_path)
    assert not isinstance(light, PreTrainedTokenizerFast)  # counting workers need not import transformers
    rows: list[CauldronRow] = [
        {"images": [], "texts": [{"user": "u", "assistant": text, "source": "s"}]}
        for text in ("The value is returned.", "None.", "<end_of_utterance> x\n  indented", "")
    ]
    assert answer_token_counts(rows, light).tolist() == answer_token_counts(rows, full).tolist()


@pytest.mark.parametrize("control", ["", "<end_of_utterance>", "<image>", "</s>"])
def test_control_strings_in_answers_count_as_chat_tokenizes_them(bare_tokenizer, control):
    from transformers import PreTrainedTokenizerFast

    from cauldron.chat import render_chat, tokenize_chat

    fast = PreTrainedTokenizerFast(tokenizer_object=bare_tokenizer)
    answer = f"Yes:{control} and{control} done {control}"
    row: CauldronRow = {"images": [], "texts": [{"user": "q", "assistant": answer, "source": "x"}]}
    trained = tokenize_chat(render_chat(row), fast)
    answer_tokens = sum(trained.loss_mask) - 1  # what carries loss, less the turn's own <end_of_utterance>
    assert answer_token_counts([row], bare_tokenizer).tolist() == [answer_tokens]
    assert answer_token_counts([row], fast).tolist() == [answer_tokens]
