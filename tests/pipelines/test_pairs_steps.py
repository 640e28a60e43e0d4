"""The user's steps on pairs: applied to every pair before scoring, their drops ledgered under their stage."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.ledger import LedgerEntry
from curation.pairs.pair import Pair, PairColumns
from curation.readers import Partition
from examples.custom_step import BlockedWords, MinWords
from pipelines.pairs import PairsConfig, clean_pairs


def test_steps_drop_pairs_under_their_stage_and_key_the_scores(tmp_path):
    rows = [
        {"image": b"bytes", "TEXT": "a cat"},
        {"image": b"bytes", "TEXT": "a cat on a mat"},
        {"image": None, "TEXT": "no image at all here"},
        {"image": b"bytes", "TEXT": "a casino on a pier"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    config = PairsConfig(
        [tmp_path],
        tmp_path / "out",
        input_kind="bytes",
        caption="alt",
        columns=PairColumns(synthetic_caption=None),
        nsfw_source="column",
        steps=(MinWords(3), BlockedWords(["casino"])),
    )
    items = list(clean_pairs(config, Partition("p", tmp_path / "p.parquet")))
    assert [item.caption for item in items if isinstance(item, Pair)] == ["a cat on a mat"]
    assert [item for item in items if isinstance(item, LedgerEntry)] == [
        LedgerEntry("p/0", "p", "custom", "too_few_words", "2 words < 3"),
        LedgerEntry("p/2", "p", "input", "missing_image", "no bytes in column 'image'"),
        LedgerEntry("p/3", "p", "custom", "blocked_word", "casino"),
    ]
    plain = PairsConfig([Path("in")], Path("out"))
    assert plain.scoring_fingerprint() != PairsConfig([Path("in")], Path("out"), steps=(MinWords(3),)).scoring_fingerprint()
    assert PairsConfig([Path("in")], Path("out"), steps=()).scoring_fingerprint() == plain.scoring_fingerprint()
