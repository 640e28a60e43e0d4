import time

import pytest

from curation.documents import InterleavedDocument
from curation.errors import Rejection
from curation.obelics_steps import OptOut
from curation.optout import OptOutVerdicts, UncheckedUrls, query_spawning
from curation.optout_lists import DoNotTrainList
from curation.spawning import SpawningAuthError, SpawningClient, SpawningConfig, SpawningUnavailable
from curation.url_cache import UrlVerdictCache
from curation.url_hashes import url_key
from tests.curation.spawning_server import PATH, MockSpawning


def client_for(mock, **kw):
    defaults = dict(
        endpoint=mock.endpoint,
        token="secret",
        batch_size=3,
        max_concurrency=2,
        requests_per_second=1000,
        timeout_s=5,
        backoff_initial_s=0.01,
    )
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


@pytest.mark.parametrize("failure", ["short", "reorder", 418])
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


@pytest.mark.parametrize(("token", "path", "status"), [("wrong", PATH, 401), ("secret", "/api/v1/nothing", 404)])
def test_a_refused_token_or_endpoint_stops_the_whole_check_at_once(token, path, status):
    with MockSpawning() as mock:
        with pytest.raises(SpawningAuthError, match=f"HTTP {status}"):
            client_for(mock, token=token, endpoint=mock.base + path, batch_size=2, max_concurrency=1).query(URLS)
    assert len(mock.statuses) <= 2  # the batch in flight at most, not one request per batch (5)


def test_fail_fast_stops_at_the_first_batch_that_exhausts_its_retries():
    with MockSpawning() as mock:
        mock.failures = [503] * 100
        with pytest.raises(SpawningUnavailable, match="gave up after 2 attempts: HTTP 503"):
            client_for(mock, batch_size=2, max_concurrency=1, max_retries=1).query(URLS, fail_fast=True)
    assert len(mock.statuses) <= 4  # at most the batch in flight when the first gave up; 10 without fail-fast


def test_a_url_the_api_refuses_is_isolated_by_splitting_its_batch():
    urls = URLS[:6] + ["https://img.example/%ZZ-refused.jpg"]
    with MockSpawning() as mock:
        mock.refuse = "refused"
        result = client_for(mock, batch_size=100, max_concurrency=1).query(urls)
    assert list(result.unchecked) == [urls[-1]] and "HTTP 400" in result.unchecked[urls[-1]]
    assert result.opted_out == {u: False for u in urls[:6]}


def test_urls_with_control_characters_do_not_poison_their_batch():
    nasty = ["https://img.example/new\nline.jpg", " https://IMG.example/tab\t.jpg\r\n", "https://img.example/nul\x00optout.jpg"]
    with MockSpawning() as mock:
        result = client_for(mock, batch_size=100).query(URLS[:2] + nasty)
    assert not result.unchecked
    assert result.opted_out == {
        URLS[0]: False,
        URLS[1]: False,
        "https://img.example/newline.jpg": False,
        "https://img.example/tab.jpg": False,
        "https://img.example/nul%00optout.jpg": True,
    }
    assert all("\n" not in u and "\x00" not in u for r in mock.requests for u in r)


def test_percent_encoded_echoes_are_matched_after_normalisation():
    urls = ["https://img.example/a b.jpg", "https://img.example/é.jpg", "https://img.example/optout ü.jpg"]
    with MockSpawning() as mock:
        mock.percent_encode_echo = True
        result = client_for(mock, batch_size=100).query(urls)
    assert result.opted_out == {urls[0]: False, urls[1]: False, urls[2]: True} and not result.unchecked


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_followed_with_the_post_body(status):
    with MockSpawning() as mock:
        mock.redirect_status = status
        result = client_for(mock, endpoint=mock.endpoint.rstrip("/")).query(URLS)
    assert result.opted_out == {u: "optout" in u for u in URLS} and not result.unchecked
    assert mock.statuses.count(status) == len(mock.requests) == 3


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
    lists = DoNotTrainList.of(["listed.example"])
    urls = URLS + ["https://cdn.listed.example/a.jpg"]
    with MockSpawning() as mock:
        answers, stats = query_spawning(urls, lists, client_for(mock), cache)
        verdicts = OptOutVerdicts(lists, answers.opted_out, answers.unchecked)
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
    verdicts = OptOutVerdicts(unchecked=UncheckedUrls.of({url_key("https://u.example/1.jpg"): "HTTP 500"}))
    assert OptOut(verdicts, "drop").apply(doc) == Rejection("opt_out_unchecked", "https://u.example/1.jpg: HTTP 500")
    assert OptOut(verdicts, "fail").apply(doc) == doc  # the run itself fails earlier


def test_unchecked_urls_are_kept_as_hashes_with_a_bounded_set_of_reasons():
    from curation.optout import MAX_REASONS, OTHER_REASON

    unchecked = UncheckedUrls.of({f"https://u.example/{i}.jpg": f"reason {i % (MAX_REASONS + 5)}" for i in range(5000)})
    assert len(unchecked) == 5000 and unchecked.urls.hashes.dtype.itemsize == 8
    assert len(unchecked.reasons) == MAX_REASONS
    assert unchecked.reason("https://u.example/7.jpg") == "reason 7"
    assert unchecked.reason(f"https://u.example/{MAX_REASONS + 1}.jpg") == OTHER_REASON
    assert unchecked.reason("https://u.example/checked.jpg") is None
