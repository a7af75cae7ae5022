"""Image fetching against a real local HTTP server: address policy, limits, retries, ETags, concurrency."""

from __future__ import annotations

import hashlib
import socket
import threading
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import pytest

from poflow_dagster.domain.errors import PoflowError
from poflow_dagster.images import (
    AllowList,
    BlockedUrl,
    FetchResult,
    FetchSettings,
    ImageRequest,
    MemoryEtagCache,
    check_url,
    fetch_images,
    is_public_address,
)
from poflow_dagster.images.fetch import _retry_after
from poflow_dagster_tests.image_server import (  # noqa: F401
    ImageServer,
    image_server,
    jpeg_bytes,
    png_bytes,
    make_certificates,
    start_image_server,
)

LOCAL = AllowList.parse("127.0.0.1")


def _settings(**overrides) -> FetchSettings:
    return FetchSettings(**{"allow": LOCAL, "backoff": 0.01, **overrides})


def _one(server: ImageServer, path: str, **overrides) -> FetchResult:
    [result] = fetch_images([ImageRequest(server.url(path), key=path)], settings=_settings(**overrides))
    assert result.request.key == path
    return result


def _blocked(url: str, **kwargs) -> str:
    with pytest.raises(BlockedUrl) as caught:
        check_url(url, allow=kwargs.pop("allow", AllowList()), **kwargs)
    return caught.value.reason


def _resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


# -- net_policy ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png", "http://2130706433/x.png", "http://0177.0.0.1/x.png", "http://0x7f.0.0.1/x.png",
        "http://127.1/x.png", "http://10.1.2.3/", "http://172.16.0.9/", "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/", "http://0.0.0.0/", "http://224.0.0.1/",
        "http://240.0.0.1/", "http://255.255.255.255/", "http://[::1]/", "http://[::]/", "http://[fe80::1]/",
        "http://[fc00::1]/", "http://[fd12:3456::1]/", "http://[ff02::1]/", "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::1]/",
        "https://[::ffff:10.0.0.1]:8443/",
    ],
)
def test_non_public_addresses_are_blocked_in_every_spelling(url):
    assert _blocked(url) == "blocked_address"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/x.png", "bad_scheme"), ("file:///etc/passwd", "bad_scheme"),
        ("gopher://93.184.216.34/", "bad_scheme"), ("javascript:alert(1)", "bad_scheme"), ("x.png", "bad_scheme"),
        ("http://user:pw@93.184.216.34/x.png", "credentials_in_url"),
        ("http://user@93.184.216.34/", "credentials_in_url"),
        ("http:///x.png", "bad_url"), ("http://[::1/x.png", "bad_url"),
    ],
)
def test_bad_schemes_credentials_and_garbage_are_refused(url, reason):
    assert _blocked(url) == reason


def test_public_addresses_pass_and_every_resolved_address_must_be_public():
    assert is_public_address("93.184.216.34") and is_public_address("2606:2800:220:1:248:1893:25c8:1946")
    target = check_url("https://93.184.216.34/a.png?v=1", allow=AllowList())
    assert (target.address, target.port, target.sni_hostname()) == ("93.184.216.34", 443, None)
    both = _resolver({"cdn.shop.test": ["93.184.216.34", "10.0.0.7"]})
    assert _blocked("http://cdn.shop.test/a.png", resolver=both) == "blocked_address"
    assert _blocked("http://nowhere.test/a.png", resolver=_resolver({})) == "dns_error"


def test_pinned_target_connects_to_the_checked_address_with_the_name_in_host_and_sni():
    resolve = _resolver({"cdn.shop.test": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    target = check_url("https://CDN.shop.test:8443/img/a.png?x=1#frag", allow=AllowList(), resolver=resolve)
    assert target.connect_url() == "https://93.184.216.34:8443/img/a.png?x=1"
    assert target.connect_url(target.addresses[1]) == "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/img/a.png?x=1"
    assert (target.host_header, target.sni_hostname()) == ("cdn.shop.test:8443", "cdn.shop.test")
    assert check_url("http://93.184.216.34:80/", allow=AllowList()).host_header == "93.184.216.34"
    calls: list[str] = []
    idn = check_url("https://bücher.example/a.png", allow=AllowList(),
                    resolver=_resolver({"xn--bcher-kva.example": ["93.184.216.34"]}, calls))
    assert (idn.host_header, idn.sni_hostname(), calls) == ("xn--bcher-kva.example",) * 2 + (["xn--bcher-kva.example"],)


def test_allow_list_entries_by_ip_cidr_name_and_port():
    allow = AllowList.parse(" 127.0.0.1 , 10.0.0.0/8, images.local:8080, [::1]:9000 ,")
    assert check_url("http://127.0.0.1:1234/", allow=allow).address == "127.0.0.1"
    assert check_url("http://0177.0.0.1/", allow=allow).address == "127.0.0.1"  # same address, other spelling
    assert check_url("http://10.9.8.7/", allow=allow).address == "10.9.8.7"
    assert _blocked("http://192.168.0.1/", allow=allow) == "blocked_address"
    local = _resolver({"images.local": ["192.168.5.5"]})
    assert check_url("http://images.local:8080/", allow=allow, resolver=local).address == "192.168.5.5"
    assert _blocked("http://images.local:8081/", allow=allow, resolver=local) == "blocked_address"
    assert check_url("http://[::1]:9000/", allow=allow).address == "::1"
    assert _blocked("http://[::1]:9001/", allow=allow) == "blocked_address"
    assert _blocked("http://[::ffff:169.254.169.254]/", allow=allow) == "blocked_address"


def test_retry_after_seconds_dates_and_cap():
    assert _retry_after("2", 30) == 2
    assert _retry_after("120", 30) == 30
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=10), usegmt=True)
    assert 5 <= _retry_after(later, 30) <= 10
    assert _retry_after("soon", 30) is None and _retry_after(None, 30) is None


# -- fetching ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "fmt"), [("/png", "PNG"), ("/jpeg", "JPEG"), ("/webp", "WEBP"),
                                           ("/gif-animated", "GIF"), ("/cmyk.jpg", "JPEG")])
def test_real_images_are_fetched_validated_and_hashed(image_server, path, fmt):
    result = _one(image_server, path)
    assert (result.status, result.reason, result.http_status, result.attempts) == ("fetched", None, 200, 1)
    assert result.image.format == fmt and result.image.width == 400
    assert result.sha256 == hashlib.sha256(result.data).hexdigest() == result.image.sha256
    [(_, headers)] = image_server.seen
    assert headers["User-Agent"].startswith("poflow-image-fetcher/")


def test_loopback_needs_the_allow_list(image_server, monkeypatch):
    monkeypatch.delenv("POFLOW_IMAGE_ALLOWED_HOSTS", raising=False)
    [blocked] = fetch_images([ImageRequest(image_server.url("/png"))], retries=0)
    assert (blocked.status, blocked.reason) == ("failed", "blocked_address")
    assert image_server.hits["/png"] == 0
    monkeypatch.setenv("POFLOW_IMAGE_ALLOWED_HOSTS", "example.org, 127.0.0.1")
    [fetched] = fetch_images([ImageRequest(image_server.url("/png"))])
    assert fetched.status == "fetched" and image_server.hits["/png"] == 1


def test_connection_goes_to_the_checked_address_without_a_second_lookup(image_server):
    calls: list[str] = []
    resolve = _resolver({"images.example": ["127.0.0.1"]}, calls)
    settings = FetchSettings(allow=AllowList.parse("images.example"), resolver=resolve)
    # images.example does not exist in DNS: only the pinned address can have reached the server.
    [result] = fetch_images([ImageRequest(image_server.url("/redirect-ok", host="images.example"))], settings=settings)
    assert result.status == "fetched" and result.redirects == 1
    assert calls == ["images.example", "images.example"]  # once per hop, by the policy only
    assert [h["Host"] for _, h in image_server.seen] == [f"images.example:{image_server.port}"] * 2


def test_https_is_pinned_to_the_checked_address_and_verified_for_the_name(tmp_path):
    tls = make_certificates(str(tmp_path), ["images.example"])
    resolve = _resolver({"images.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    settings = FetchSettings(allow=AllowList.parse("127.0.0.0/8"), resolver=resolve, verify=tls.client_context(),
                             retries=2, backoff=0.01)
    with start_image_server(tls=tls) as server:
        # The certificate names images.example only (no IP): it verifies because SNI and the check use the name.
        [ok] = fetch_images([ImageRequest(server.url("/png", host="images.example"))], settings=settings)
        assert (ok.status, ok.final_url) == ("fetched", server.url("/png", host="images.example"))
        [wrong] = fetch_images([ImageRequest(server.url("/jpeg", host="other.example"))], settings=settings)
        assert (wrong.reason, wrong.attempts) == ("tls_error", 1)  # a bad certificate is not retried
        assert "certificate" in wrong.detail.lower()
        assert server.hits == {"/png": 1}


def test_refused_connections_are_retried_then_reported():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    [result] = fetch_images([ImageRequest(f"http://127.0.0.1:{port}/png")], settings=_settings(retries=2))
    assert (result.status, result.reason, result.attempts) == ("failed", "connection_error", 3)


def test_a_changed_image_replaces_the_cached_etag(image_server):
    cache = MemoryEtagCache()
    url = image_server.url("/etag.png")
    cache.put(url, '"v0"', "0" * 64)
    [result] = fetch_images([ImageRequest(url)], cache=cache, settings=_settings())
    assert (result.status, result.etag) == ("fetched", '"v1"')
    assert cache.get(url) == ('"v1"', result.sha256)
    assert image_server.seen[0][1]["If-None-Match"] == '"v0"'


def test_etag_is_sent_and_304_answers_not_modified_with_the_cached_hash(image_server):
    cache = MemoryEtagCache()
    url = image_server.url("/etag.png")
    [first] = fetch_images([ImageRequest(url)], cache=cache, settings=_settings())
    assert (first.status, first.etag) == ("fetched", '"v1"')
    assert cache.get(url) == ('"v1"', first.sha256)
    [second] = fetch_images([ImageRequest(url)], cache=cache, settings=_settings())
    assert (second.status, second.http_status, second.sha256, second.data) == ("not_modified", 304, first.sha256, None)
    assert [h.get("If-None-Match") for _, h in image_server.seen] == [None, '"v1"']


def test_404_is_not_retried(image_server):
    result = _one(image_server, "/missing")
    assert (result.status, result.reason, result.http_status, result.attempts) == ("failed", "http_404", 404, 1)
    assert image_server.hits["/missing"] == 1


def test_500_then_200_is_retried_once(image_server):
    result = _one(image_server, "/flaky")
    assert (result.status, result.attempts) == ("fetched", 2)
    assert image_server.hits["/flaky"] == 2


def test_persistent_500_gives_up_after_the_retries(image_server):
    result = _one(image_server, "/always-500", retries=2)
    assert (result.reason, result.attempts) == ("http_500", 3)
    assert image_server.hits["/always-500"] == 3


def test_429_waits_for_retry_after(image_server):
    result = _one(image_server, "/ratelimited", backoff=0.001)
    assert (result.status, result.attempts) == ("fetched", 2)
    first, second = image_server.hit_times["/ratelimited"]
    assert second - first >= 0.9  # the server's Retry-After: 1, not the 1 ms backoff


def test_slow_server_times_out_and_is_retried(image_server):
    result = _one(image_server, "/slow?ms=3000", timeout=0.3, retries=1)
    assert (result.status, result.reason, result.attempts) == ("failed", "timeout", 2)
    assert image_server.hits["/slow"] == 2


def test_total_deadline_caps_a_long_read(image_server):
    result = _one(image_server, "/slow?ms=3000", timeout=10, deadline=0.5)
    assert (result.reason, result.attempts) == ("timeout", 1)


def test_oversized_bodies_are_refused_early(image_server):
    huge = _one(image_server, "/huge")
    assert (huge.reason, huge.data) == ("too_large", None)
    assert "Content-Length" in huge.detail
    streamed = _one(image_server, "/stream-big?bytes=5000000", max_bytes=100_000)
    assert streamed.reason == "too_large" and "body passed" in streamed.detail


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/bomb.png", "too_many_pixels"), ("/bomb-64mp.png", "too_many_pixels"), ("/not-image.png", "not_an_image"),
     ("/truncated.png", "decode_error"), ("/tiny.png", "too_small")],
)
def test_bad_images_are_rejected_with_a_reason(image_server, path, reason):
    result = _one(image_server, path)
    assert (result.status, result.reason, result.image, result.attempts) == ("failed", reason, None, 1)


def test_redirect_to_metadata_is_refused_even_though_the_first_host_is_allowed(image_server):
    result = _one(image_server, "/redirect-metadata")
    assert result.reason == "redirect_blocked"
    assert "169.254.169.254" in result.detail
    assert image_server.hits["/redirect-metadata"] == 1


def test_redirects_are_followed_up_to_five(image_server):
    ok = _one(image_server, "/chain/5")
    assert (ok.status, ok.redirects, ok.final_url) == ("fetched", 5, image_server.url("/chain/0"))
    assert _one(image_server, "/chain/6").reason == "too_many_redirects"
    loop = _one(image_server, "/loop-a")
    assert loop.reason == "too_many_redirects"
    assert image_server.hits["/loop-a"] + image_server.hits["/loop-b"] == 6


def test_ten_requests_are_in_flight_at_once(image_server):
    # Each answer takes 2 s, so all ten threads have started before the first answer even on a loaded machine.
    requests = [ImageRequest(image_server.url(f"/slow?ms=2000&i={i}")) for i in range(20)]
    results = fetch_images(requests, settings=_settings(concurrency=10, per_host=10))
    assert [r.status for r in results] == ["fetched"] * 20
    assert image_server.max_in_flight == 10


def test_concurrency_one_is_sequential(image_server):
    requests = [ImageRequest(image_server.url(f"/slow?ms=100&i={i}")) for i in range(4)]
    fetch_images(requests, settings=_settings(concurrency=1, per_host=10))
    assert image_server.max_in_flight == 1 and image_server.hits["/slow"] == 4


def test_per_host_limit_is_respected_and_other_hosts_still_proceed(image_server):
    resolve = _resolver({"img-a.test": ["127.0.0.1"], "img-b.test": ["127.0.0.1"]})
    settings = _settings(concurrency=10, per_host=3, resolver=resolve, allow=AllowList.parse("img-a.test,img-b.test"))
    requests = [ImageRequest(image_server.url(f"/slow?ms=500&i={i}", host=host))
                for i in range(10) for host in ("img-a.test", "img-b.test")]
    results = fetch_images(requests, settings=settings)
    assert all(r.status == "fetched" for r in results)
    assert image_server.max_in_flight_by_host == {"img-a.test": 3, "img-b.test": 3}
    assert image_server.max_in_flight == 6


def test_results_are_delivered_as_they_complete_and_returned_in_request_order(image_server):
    arrived: list[str] = []
    slow, fast = image_server.url("/slow?ms=1500"), image_server.url("/png")

    def on_result(result: FetchResult) -> None:
        arrived.append(result.request.url)
        if result.request.url == fast:
            raise RuntimeError("a broken callback must not stop the other images")

    results = fetch_images([ImageRequest(slow), ImageRequest(fast)], on_result=on_result, settings=_settings())
    assert arrived == [fast, slow]
    assert [r.request.url for r in results] == [slow, fast]
    assert all(r.status == "fetched" for r in results)


def test_concurrency_and_per_host_come_from_env(image_server, monkeypatch):
    monkeypatch.setenv("POFLOW_IMAGE_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("POFLOW_IMAGE_CONCURRENCY", "3")
    monkeypatch.setenv("POFLOW_IMAGE_PER_HOST", "10")
    fetch_images([ImageRequest(image_server.url(f"/slow?ms=500&i={i}")) for i in range(8)])
    assert image_server.max_in_flight == 3
    monkeypatch.setenv("POFLOW_IMAGE_PER_HOST", "2")
    with start_image_server() as other:
        fetch_images([ImageRequest(other.url(f"/slow?ms=500&i={i}")) for i in range(6)], concurrency=5)
        assert other.max_in_flight == 2
    monkeypatch.setenv("POFLOW_IMAGE_CONCURRENCY", "ten")
    with pytest.raises(PoflowError) as caught:
        fetch_images([ImageRequest(image_server.url("/png"))])
    assert caught.value.code == "bad_config"


def test_many_images_share_nothing_across_threads(image_server):
    lock, seen = threading.Lock(), []

    def collect(result: FetchResult) -> None:
        with lock:
            seen.append(result.sha256)

    paths = ["/png", "/jpeg", "/pic-small.jpg", "/pic-large.jpg"] * 5
    results = fetch_images([ImageRequest(image_server.url(f"{p}?n={i}")) for i, p in enumerate(paths)],
                           on_result=collect, settings=_settings())
    expected = {"/png": png_bytes(), "/jpeg": jpeg_bytes(), "/pic-small.jpg": jpeg_bytes(200, 150),
                "/pic-large.jpg": jpeg_bytes(800, 600)}
    assert [r.data for r in results] == [expected[p] for p in paths]
    assert sorted(seen) == sorted(r.sha256 for r in results)


def test_no_requests_no_threads():
    assert fetch_images([], settings=_settings()) == []


def test_without_keep_data_the_returned_results_hold_no_bodies(image_server):
    paths = ["/png", "/jpeg", "/missing"]
    handed: dict[str, bytes | None] = {}

    def on_result(result: FetchResult) -> None:
        handed[result.request.url] = result.data

    requests = [ImageRequest(image_server.url(p)) for p in paths]
    results = fetch_images(requests, on_result=on_result, settings=_settings(), keep_data=False)
    assert [r.status for r in results] == ["fetched", "fetched", "failed"]
    assert [r.data for r in results] == [None, None, None]  # nothing kept for the return value
    assert [r.sha256 for r in results[:2]] == [hashlib.sha256(png_bytes()).hexdigest(),
                                               hashlib.sha256(jpeg_bytes()).hexdigest()]
    assert results[0].image is not None and results[0].image.width == 400  # the facts stay, the bytes go
    assert handed == {image_server.url("/png"): png_bytes(), image_server.url("/jpeg"): jpeg_bytes(),
                      image_server.url("/missing"): None}  # on_result had the bodies
    [kept] = fetch_images([ImageRequest(image_server.url("/png"))], settings=_settings())
    assert kept.data == png_bytes()  # the default still returns them
