"""The step runner, step loading from names and YAML, and the example steps inside the OBELICS cleaning."""

import json
import pickle
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.documents import ImageRef, InterleavedDocument
from curation.errors import Rejection, SampleError, UserError
from curation.ledger import LedgerEntry
from curation.obelics import CleaningSettings, clean_partition, cleaning_steps
from curation.optout import OptOutVerdicts
from curation.pairs.url_guard import DownloadRejected
from curation.step_loading import load_step, load_steps_file, parse_step
from curation.steps import Filter, Removed, Step, Steps, Trimmed
from examples.custom_step import BlockedWords, MinWords


def doc(doc_id: str, *texts: str) -> InterleavedDocument:
    nodes = [t for text in texts for t in (text, None)]
    images: list[ImageRef | None] = [None if t is not None else f"https://img.example/{doc_id}/{i}.jpg" for i, t in enumerate(nodes)]
    metadata = [None if url is None else {"src": url} for url in images]
    return InterleavedDocument(doc_id, nodes, images, metadata)


class DropFirstImage(Step[InterleavedDocument]):
    name = "drop_first_image"
    stage = "trim"

    def apply(self, sample):
        first = sample.image_positions[0]
        trimmed = sample.without_images(lambda position: position == first)
        reason = trimmed.emptiness_reason()
        removed = (Removed(sample.image_url(first), "trimmed", "the first one"),)
        return Trimmed(trimmed, removed, Rejection("empty", reason) if reason else None)


class Shout(Step[InterleavedDocument]):
    name = "shout"
    stage = "edit"

    def apply(self, sample):
        return InterleavedDocument(sample.id, [t.upper() if t else t for t in sample.texts], sample.images, sample.metadata)


def test_the_first_rejection_ends_the_sample_under_its_steps_stage():
    steps = Steps([Shout(), MinWords(3), BlockedWords(["never"])])
    kept = steps.run(doc("a", "one two three"), "p")
    assert kept.dropped is None and kept.sample.texts == ["ONE TWO THREE", None]
    short = steps.run(doc("b", "one two"), "p")
    assert short.dropped == LedgerEntry("b", "p", "custom", "too_few_words", "2 words < 3")
    blocked = steps.run(doc("c", "never say Never"), "p")
    assert blocked.dropped == LedgerEntry("c", "p", "custom", "blocked_word", "never")


def test_removed_parts_are_listed_with_the_sample_even_when_it_is_then_dropped():
    steps = Steps([DropFirstImage()])
    two = steps.run(doc("a", "x", "y"), "p")
    assert two.dropped is None and two.sample.image_urls() == ["https://img.example/a/3.jpg"]
    assert two.removed == [{"id": "a", "url": "https://img.example/a/1.jpg", "reason": "trimmed", "detail": "the first one"}]
    one = steps.run(doc("b", "x"), "p")
    assert one.dropped == LedgerEntry("b", "p", "trim", "empty", "no_image") and len(one.removed) == 1


def test_the_fingerprint_follows_names_and_settings():
    assert Steps([MinWords(3)]).fingerprint() == [{"step": "min_words", "settings": {"min_words": 3}}]
    assert Steps([MinWords(3)]).fingerprint() != Steps([MinWords(4)]).fingerprint()
    assert BlockedWords(["B", "a"]).settings() == {"words": ["a", "b"]}  # private attributes stay out
    assert not MinWords.changes_text and Shout.changes_text


def test_bad_step_lists_are_user_errors():
    with pytest.raises(UserError, match="share a name"):
        Steps([MinWords(3), MinWords(4)])
    with pytest.raises(UserError, match="not a cleaning step"):
        not_a_step: Any = object()  # what an untyped caller could pass
        Steps([not_a_step])

    class Nameless(Filter):
        def reject(self, sample):
            return None

    with pytest.raises(UserError, match="must set `name` and `stage`"):
        Steps([Nameless()])

    class Opaque(MinWords):
        def __init__(self):
            self.model = object()

    with pytest.raises(UserError, match="min_words.*JSON values"):
        Steps([Opaque()]).fingerprint()


def test_steps_load_from_names_json_arguments_and_yaml(tmp_path):
    min_words = parse_step('examples.custom_step:MinWords:{"min_words": 7}')
    assert isinstance(min_words, MinWords) and min_words.min_words == 7
    blocked = load_step("examples.custom_step:BlockedWords", {"words": ["x"]})
    assert isinstance(blocked, BlockedWords) and blocked.words == ["x"]
    (tmp_path / "steps.yaml").write_text(
        "- step: examples.custom_step:MinWords\n  args: {min_words: 2}\n"
        "- step: examples.custom_step:BlockedWords\n  args: {words: [casino]}\n"
    )
    assert [type(s).__name__ for s in load_steps_file(tmp_path / "steps.yaml")] == ["MinWords", "BlockedWords"]
    for text, message in [
        ("examples.custom_step", "module:Class"),
        ("no_such_module_here:Step", "cannot import no_such_module_here"),
        ("examples.custom_step:Rejection", "no Step subclass named Rejection"),
        ("examples.custom_step:MinWords:{bad", "not JSON"),
        ("examples.custom_step:MinWords:[1]", "must be a JSON object"),
        ('examples.custom_step:MinWords:{"minimum": 2}', "bad arguments"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_step(text)
    (tmp_path / "bad.yaml").write_text("step: examples.custom_step:MinWords\n")
    with pytest.raises(UserError, match="expected a list"):
        load_steps_file(tmp_path / "bad.yaml")


def test_a_user_step_runs_after_the_built_in_cleaning(tmp_path):
    def row(text, url):
        return {"texts": [text, None], "images": [None, url], "metadata": json.dumps([None, {"src": url}]), "general_metadata": "{}"}

    text_only = {"texts": ["short"], "images": [None], "metadata": "[null]", "general_metadata": "{}"}
    rows = [row("a long enough text here", "https://i.example/1.jpg"), row("short", "https://i.example/2.jpg"), text_only]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    out = clean_partition(tmp_path / "p.parquet", "p", CleaningSettings(), OptOutVerdicts(), steps=[MinWords(3)])
    assert [d.text for d in out.documents] == ["a long enough text here"]
    assert [(e.stage, e.reason) for e in out.ledger] == [("custom", "too_few_words"), ("parse", "no_image")]
    names = [step["step"] for step in cleaning_steps(CleaningSettings(), OptOutVerdicts(), extra=[MinWords(3)]).fingerprint()]
    assert names == ["image_check", "interleaved", "opt_out", "min_words"]


def test_a_sample_error_carries_its_rejection():
    error = SampleError("decode_error", "truncated")
    assert error.rejection == Rejection("decode_error", "truncated") and str(error) == "decode_error: truncated"
    assert LedgerEntry.of(error.rejection, "p", "images", "doc") == LedgerEntry("doc", "p", "images", "decode_error", "truncated")
    again = pickle.loads(pickle.dumps(error))  # as it crosses to another process
    assert type(again) is SampleError and again.rejection == error.rejection
    refused = pickle.loads(pickle.dumps(DownloadRejected("timeout", "slow")))
    assert str(refused) == "[timeout] slow" and refused.rejection == Rejection("timeout", "slow")
    with pytest.raises(ValueError, match="names no sample"):
        LedgerEntry.of(error.rejection, "p", "images")
