import time

import pytest

from curation.optout import OptOutVerdicts, query_spawning, remove_opted_out
from curation.documents import InterleavedDocument
from curation.optout_lists import DoNotTrainList
from curation.spawning import SpawningClient, SpawningConfig
from curation.url_cache import UrlVerdictCache
from tests.curation.spawning_server import MockSpawning


def client_for(mock, **kw):
    defaults = dict(endpoint=mock.endpoint, token="secret", batch_size=3, max_concurrency=2, requests_per_second=1000, timeout_s=5, backoff_initial_s=0.01)
    defaults.update(kw)
    return SpawningClient(SpawningConfig(**defaults))


URLS = [f"https://img.example/{i}.jpg" for i in range(7)] + ["https://img.example/optout-1.jpg", "https://img.example/optout-2.jpg"]


def test_batches_preserve_order_and_find_opted_out_urls():
    with MockSpawning() as mock:
        result = client_for(mock).query(URLS)
    assert result.opted_out == {u: "optout" in u for u in URLS}
    assert not result.unchecked
    assert [len(r) for r in mock.requests] == [3, 3, 3]
    assert sorted(u for r in mock.requests for u in r) == sorted(URLS)
    assert mock.max_concurrent <= 2


def test_a_single_url_is_padded_to_two():
    with MockSpawning() as mock:
        result = client_for(mock).query(["https://img.example/optout-only.jpg"])
    assert result.opted_out == {"https://img.example/optout-only.jpg": True}
    assert mock.requests == [["https://img.example/optout-only.jpg", ""]]


def test_retries_429_500_and_slow_replies_then_succeeds():
    with MockSpawning() as mock:
        mock.failures = [429, 500, "slow", 503]
        mock.slow_seconds = 1.0
        result = client_for(mock, batch_size=100, max_concurrency=1, timeout_s=0.3).query(URLS)
    assert result.opted_out == {u: "optout" in u for u in URLS}
    assert result.retries == 4 and not result.unchecked


@pytest.mark.parametrize("failure", ["short", "reorder", 400])
def test_wrong_answers_leave_urls_unchecked_never_allowed(failure):
    with MockSpawning() as mock:
        mock.failures = [failure]
        result = client_for(mock, batch_size=100, max_concurrency=1).query(URLS[:4])
    assert set(result.unchecked) == set(URLS[:4])
    assert not result.opted_out


def test_gives_up_after_max_retries():
    with MockSpawning() as mock:
        mock.failures = [500] * 10
        result = client_for(mock, batch_size=100, max_retries=2).query(URLS[:2])
    assert set(result.unchecked) == set(URLS[:2]) and "3 attempts" in result.unchecked[URLS[0]]


def test_bad_token_is_a_hard_failure():
    with MockSpawning() as mock:
        result = client_for(mock, token="wrong").query(URLS[:2])
    assert "HTTP 401" in result.unchecked[URLS[0]]


def test_rate_limit_spaces_requests():
    with MockSpawning() as mock:
        started = time.monotonic()
        client_for(mock, batch_size=2, max_concurrency=4, requests_per_second=20).query(URLS[:8])
        elapsed = time.monotonic() - started
    assert len(mock.requests) == 4 and elapsed >= 3 / 20


def test_config_validation():
    with pytest.raises(ValueError):
        SpawningConfig(batch_size=1)
    with pytest.raises(ValueError):
        SpawningConfig(batch_size=10_001)
    with pytest.raises(ValueError):
        SpawningConfig(endpoint="file:///etc/passwd")


def test_cache_means_a_rerun_queries_nothing_and_recheck_requeries(tmp_path):
    cache = UrlVerdictCache(tmp_path / "cache.sqlite")
    lists = DoNotTrainList()
    lists.add("listed.example")
    urls = URLS + ["https://cdn.listed.example/a.jpg"]
    with MockSpawning() as mock:
        verdicts, stats = query_spawning(urls, lists, client_for(mock), cache)
        assert stats["queried"] == len(URLS) and len(cache) == len(URLS)
        assert verdicts.source("https://cdn.listed.example/a.jpg") == "list:domain:listed.example"
        assert verdicts.source(URLS[-1]) == "spawning" and verdicts.source(URLS[0]) is None
        mock.requests.clear()
        _, stats = query_spawning(urls, lists, client_for(mock), UrlVerdictCache(tmp_path / "cache.sqlite"))
        assert stats["queried"] == 0 and stats["from_cache"] == len(URLS) and not mock.requests
        time.sleep(0.05)
        _, stats = query_spawning(urls, lists, client_for(mock), cache, recheck_after_s=0.01)
        assert stats["queried"] == len(URLS)


def test_lists_from_text_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "l.txt").write_text("# comment\nhttps://A.example/x.jpg\nblocked.example\n")
    pq.write_table(pa.table({"url": ["https://c.example/y.png"], "domain": ["d.example"]}), tmp_path / "l.parquet")
    lists = DoNotTrainList.from_files([tmp_path / "l.txt", tmp_path / "l.parquet"])
    assert lists.match("https://a.example/x.jpg") == "url"
    assert lists.match("https://a.example/other.jpg") is None
    assert lists.match("http://sub.blocked.example/z") == "domain:blocked.example"
    assert lists.match("https://notblocked.example/z") is None
    assert lists.match("https://c.example/y.png") == "url" and lists.match("https://x.d.example/") == "domain:d.example"


def test_unchecked_urls_drop_the_document_when_asked():
    doc = InterleavedDocument("d", [None, "t"], ["https://u.example/1.jpg", None], [{"src": "https://u.example/1.jpg"}, None])
    verdicts = OptOutVerdicts(unchecked={"https://u.example/1.jpg": "HTTP 500"})
    assert remove_opted_out(doc, verdicts, "drop").drop_reason == "opt_out_unchecked"
    assert remove_opted_out(doc, verdicts, "fail").drop_reason is None  # the run itself fails earlier
