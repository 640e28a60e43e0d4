import pyarrow.parquet as pq

from curation.optout import SpawningAnswers, UncheckedUrls
from curation.optout_store import answers_key, load_answers, save_answers
from curation.readers import Partition
from curation.url_hashes import HashSet


def partitions(tmp_path, *names):
    for name in names:
        (tmp_path / f"{name}.parquet").write_bytes(b"x" * len(name))
    return [Partition(name, tmp_path / f"{name}.parquet") for name in names]


def test_answers_come_back_only_under_their_key(tmp_path):
    parts = partitions(tmp_path, "a", "b")
    key = answers_key(parts, "lists", "https://api.example/")
    answers = SpawningAnswers(HashSet.of(["https://x.example/1.jpg", "https://x.example/2.jpg"]))
    path = tmp_path / "out" / "answers.parquet"
    assert save_answers(path, key, answers, now=1000.0)
    back = load_answers(path, key, now=1000.0)
    assert back is not None and list(back.opted_out.hashes) == list(answers.opted_out.hashes)
    assert pq.read_table(path).num_rows == 2

    assert answers_key(parts[:1], "lists", "https://api.example/") != key  # a partition less
    assert answers_key(parts, "other lists", "https://api.example/") != key
    assert answers_key(parts, "lists", "https://other.example/") != key
    (tmp_path / "b.parquet").write_bytes(b"replaced, longer")
    assert answers_key(parts, "lists", "https://api.example/") != key  # a partition replaced
    assert load_answers(path, "another key") is None and load_answers(tmp_path / "none.parquet", key) is None


def test_old_answers_and_unchecked_urls_are_asked_again(tmp_path):
    path = tmp_path / "answers.parquet"
    assert not save_answers(path, "k", SpawningAnswers(HashSet(), UncheckedUrls.of({"https://x.example/": "timeout"})))
    assert not path.exists()
    assert save_answers(path, "k", SpawningAnswers(), now=0.0)
    assert load_answers(path, "k", max_age_s=100.0, now=50.0) is not None
    assert load_answers(path, "k", max_age_s=100.0, now=150.0) is None
    assert load_answers(path, "k", now=1e12) is not None  # no --recheck-after-days: kept for good
