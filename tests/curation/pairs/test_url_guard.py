import time

import pytest

from curation.pairs.download_reasons import reason_for
from curation.pairs.url_guard import DownloadGuard, DownloadRejected, build_guarded_opener

from .image_server import ImageServer, Route
from .images import encoded, pixel_bomb

GUARD = DownloadGuard(max_bytes=50_000, max_pixels=1_000_000, total_timeout_s=5.0, allow_private_networks=True)
JPEG = {"Content-Type": "image/jpeg"}


def fetch(server, path, guard=GUARD):
    with build_guarded_opener(guard).open(server.url(path), timeout=2) as response:
        return response.read()


@pytest.fixture(scope="module")
def server():
    image = encoded(40, 30)
    routes = {
        "/ok.jpg": Route(body=image, headers=JPEG),
        "/untyped": Route(body=image),
        "/hop": Route(302, headers={"Location": "/ok.jpg"}),
        "/to-ftp": Route(301, headers={"Location": "ftp://127.0.0.1/a.jpg"}),
        "/to-data": Route(302, headers={"Location": "data:image/png;base64,AAAA"}),
        "/big-declared.jpg": Route(body=b"\xff" * 60_000, headers=JPEG),
        "/big-undeclared.jpg": Route(body=b"\xff" * 60_000, headers=JPEG, send_length=False),
        "/empty.jpg": Route(body=b"", headers=JPEG, send_length=False),
        "/page": Route(body=b"<html></html>", headers={"Content-Type": "text/html"}),
        "/bomb.png": Route(body=pixel_bomb(2000, 2000), headers={"Content-Type": "image/png"}),
        "/drip-body.jpg": Route(body=image, headers=JPEG, drip_s=0.02),
        "/drip-head.jpg": Route(body=image, headers=JPEG, drip_s=0.02, drip_headers=True),
        "/hop-to-drip": Route(302, headers={"Location": "/drip-body.jpg"}, drip_s=0.02, drip_headers=True),
    }
    with ImageServer(routes) as running:
        running.image = image
        yield running


def test_images_and_http_redirects_pass(server):
    assert fetch(server, "/ok.jpg") == server.image
    assert fetch(server, "/untyped") == server.image
    assert fetch(server, "/hop") == server.image


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/to-ftp", "redirect_not_allowed"),
        ("/to-data", "redirect_not_allowed"),
        ("/big-declared.jpg", "too_large"),
        ("/big-undeclared.jpg", "too_large"),
        ("/empty.jpg", "empty_image"),
        ("/page", "non_image_content_type"),
        ("/bomb.png", "too_many_pixels"),
    ],
)
def test_refusals_carry_their_reason(server, path, reason):
    with pytest.raises(Exception) as info:  # noqa: PT011 - img2dataset keeps only str(exception)
        fetch(server, path)
    assert reason_for("failed_to_download", str(info.value)) == reason


def test_only_http_schemes_are_spoken(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    with pytest.raises(Exception, match="unknown url type"):
        build_guarded_opener(GUARD).open((tmp_path / "secret.jpg").as_uri())


def test_a_body_must_arrive_within_the_total_time_limit(server):
    with pytest.raises(DownloadRejected) as info:
        fetch(server, "/ok.jpg", DownloadGuard(max_bytes=50_000, max_pixels=1_000_000, total_timeout_s=-1.0, allow_private_networks=True))
    assert info.value.reason == "timeout"


@pytest.mark.parametrize("path", ["/drip-body.jpg", "/drip-head.jpg", "/hop-to-drip"])
def test_a_slow_drip_is_cut_at_the_total_deadline_while_reading(server, path):
    """One byte every 20 ms never trips the 2 s per-operation timeout; the 1 s total deadline must."""
    guard = DownloadGuard(max_bytes=50_000, max_pixels=1_000_000, total_timeout_s=1.0, allow_private_networks=True)
    started = time.monotonic()
    with pytest.raises(DownloadRejected) as info:
        fetch(server, path, guard)
    elapsed = time.monotonic() - started
    assert info.value.reason == "timeout"
    assert elapsed < 1.0 + 0.5, f"took {elapsed:.2f}s"  # the whole body would take > 10 s


def test_loopback_and_private_hosts_are_refused_by_default(server):
    strict = DownloadGuard(max_bytes=50_000, max_pixels=1_000_000, total_timeout_s=5.0)
    with pytest.raises(DownloadRejected) as info:
        fetch(server, "/ok.jpg", strict)
    assert info.value.reason == "private_address"
