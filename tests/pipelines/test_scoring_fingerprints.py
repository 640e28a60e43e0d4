"""Scores on disk are reused when only how they are computed changes (compile, attention kernel), not what."""

from pathlib import Path

from curation.pairs.clip_embedder import ClipConfig
from curation.perplexity import PerplexityConfig
from pipelines.obelics import ObelicsConfig
from pipelines.pairs import PairsConfig


def obelics(**ppl) -> str:
    return ObelicsConfig([Path("in")], Path("out"), ppl=PerplexityConfig(**ppl)).scoring_fingerprint()


def pairs(**clip) -> str:
    return PairsConfig([Path("in")], Path("out"), clip=ClipConfig(**clip)).scoring_fingerprint()


def test_perplexity_fingerprint_ignores_compile_and_attention_only():
    assert obelics() == obelics(compile=True, attention="flex") == obelics(batch_tokens=1024, device="cpu")
    assert obelics() != obelics(max_length=128)
    assert obelics() != obelics(long_docs="truncate")


def test_clip_fingerprint_ignores_compile_but_not_decode():
    assert pairs() == pairs(compile=True)
    assert pairs() != pairs(decode="cpu")
