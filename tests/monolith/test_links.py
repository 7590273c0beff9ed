import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from monolith import links
from monolith.links import (
    FALLBACK_DESCRIPTION,
    LinkError,
    LinkExpander,
    RefusedURL,
    fetch_html,
    link_urls,
    parse_preview,
    preview_html,
    refusal_reason,
)

HUGE_BYTES = 20 * 1024 * 1024
PAGES = {
    "/titled": b"<html><head><title> Hello   page </title>"
    b'<meta name="description" content="A plain page"></head><body>x</body></html>',
    "/og": b'<html><head><title>Plain title</title><meta name="description" content="plain">'
    b'<meta property="og:title" content="OG title">'
    b'<meta property="og:description" content="OG description"></head></html>',
    "/untitled": b"<html><body>no head at all</body></html>",
    "/nodesc": b"<html><head><title>Only a title</title></head></html>",
    "/evil": b'<html><head><title>&lt;script&gt;alert("t")&lt;/script&gt;</title>'
    b'<meta name="description" content="&lt;img src=x onerror=alert(1)&gt;"></head></html>',
    "/late-title": b"<html><!--" + b"x" * 200_000 + b"--><title>Late</title></html>",
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = urlsplit(self.path).path
        self.server.seen.append(path)
        self.server.hosts.append(self.headers.get("Host"))
        if path in PAGES:
            return self._send(PAGES[path])
        route = getattr(self, "route_" + path.strip("/").replace("-", "_"), None)
        if route is None:
            self.send_error(404)
        else:
            route()

    def _send(self, body, content_type="text/html; charset=utf-8"):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _query(self, name):
        return parse_qs(urlsplit(self.path).query)[name][0]

    def route_image(self):
        self._send(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png")

    def route_redirect(self):
        self.send_response(302)
        self.send_header("Location", self._query("to"))
        self.end_headers()

    def route_chain(self):
        hops = int(self._query("n"))
        self.send_response(302)
        self.send_header("Location", f"/chain?n={hops - 1}" if hops > 1 else "/titled")
        self.end_headers()

    def route_slow(self):
        self.server.stop.wait(5)
        self._send(PAGES["/titled"])

    def route_block(self):
        self.server.release.wait(5)
        self._send(PAGES["/titled"])

    def route_drip(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><head><title>Drip</title>")
        self._drip(b" ")

    def route_header_drip(self):
        self.wfile.write(b"HTTP/1.0 200 OK\r\n")
        self._drip(b"X")

    def _drip(self, byte):
        for _ in range(100):
            if self.server.stop.wait(0.05):
                return
            try:
                self.wfile.write(byte)
                self.wfile.flush()
            except OSError:
                return

    def route_huge(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        chunk = b"<title>Huge</title>" + b"a" * (64 * 1024 - 19)
        try:
            while self.server.huge_sent < HUGE_BYTES:
                self.wfile.write(chunk)
                self.server.huge_sent += len(chunk)
        except OSError:
            pass  # the client stopped reading and hung up: what we want


def _start(server):
    server.seen = []
    server.hosts = []
    server.stop = threading.Event()
    server.release = threading.Event()
    server.huge_sent = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def _stop(server):
    server.stop.set()
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server():
    srv = _start(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    yield srv
    _stop(srv)


@pytest.fixture
def base(server):
    server.seen.clear()
    server.hosts.clear()
    server.release.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def make_expander():
    made = []

    def make(allow_private=True, **kwargs):
        expander = LinkExpander(allow_private, **kwargs)
        made.append(expander)
        return expander

    yield make
    for expander in made:
        expander.shutdown(wait=False)


def _link(url):
    return f'see <a href="{url}" rel="nofollow">{url}</a>'


# ------------------------------------------------------------ pure functions


def test_link_urls_keeps_http_links_once_in_order():
    html = (
        '<a href="https://b.example/">b</a> <a href="http://a.example/">a</a>'
        '<a href="https://b.example/">again</a> <a href="mailto:x@y.z">m</a> <a>none</a>'
        '<blockquote><p><a href="http://preview.example/">p</a></p></blockquote>'
    )
    assert link_urls(html) == ["https://b.example/", "http://a.example/"]


def test_link_urls_is_capped():
    html = "".join(f'<a href="http://h{i}.example/">{i}</a>' for i in range(50))
    assert len(link_urls(html)) == links.MAX_LINKS


def test_parse_preview_prefers_og_tags():
    assert parse_preview(PAGES["/og"]) == ("OG title", "OG description")


def test_parse_preview_accepts_og_tags_written_with_name():
    page = b'<meta name="og:title" content="N"><meta name="og:description" content="D">'
    assert parse_preview(page) == ("N", "D")


def test_parse_preview_collapses_whitespace_and_honours_meta_charset():
    page = '<meta charset="latin-1"><title>\n Caf\xe9\t  noir </title>'.encode("latin-1")
    assert parse_preview(page) == ("Café noir", None)


def test_preview_html_escapes_everything():
    html = preview_html('http://x.example/?a="b"&c', "<b>t</b>", "<script>")
    assert html == (
        '<blockquote><p><a href="http://x.example/?a=&quot;b&quot;&amp;c">&lt;b&gt;t&lt;/b&gt;</a>'
        "</p><p>&lt;script&gt;</p></blockquote>"
    )


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
        "224.0.0.1", "240.0.0.1", "100.64.0.1", "255.255.255.255", "::1", "::", "fe80::1",
        "fe80::1%lo", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
        "2002:7f00:1::", "64:ff9b::a00:1", "not-an-ip",
    ],
)
def test_refusal_reason_refuses_non_public_addresses(address):
    assert refusal_reason(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_refusal_reason_allows_public_addresses(address):
    assert refusal_reason(address) is None


# ------------------------------------------------------------ fetching


def test_title_and_description(base, make_expander):
    url = f"{base}/titled"
    html = make_expander().expand(_link(url))
    assert html == _link(url) + preview_html(url, "Hello page", "A plain page")


def test_og_tags_win(base, make_expander):
    url = f"{base}/og"
    assert make_expander().expand(_link(url)).endswith(preview_html(url, "OG title", "OG description"))


def test_no_title_falls_back_to_url_and_description_to_text(base, make_expander):
    url = f"{base}/untitled"
    html = make_expander().expand(_link(url))
    assert html.endswith(f'<a href="{url}">{url}</a></p><p>{FALLBACK_DESCRIPTION}</p></blockquote>')


def test_no_description_falls_back(base, make_expander):
    url = f"{base}/nodesc"
    assert make_expander().expand(_link(url)).endswith(preview_html(url, "Only a title", None))


def test_page_text_is_escaped(base, make_expander):
    html = make_expander().expand(_link(f"{base}/evil"))
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_every_link_gets_a_preview(base, make_expander):
    expander = make_expander()
    html = expander.expand(_link(f"{base}/titled") + _link(f"{base}/nodesc"))
    assert html.count("<blockquote>") == 2
    assert expander.stats["expanded"] == 2


def test_slow_page_gives_up_at_the_timeout(base, make_expander):
    expander = make_expander(timeout=0.5)
    started = time.monotonic()
    html = expander.expand(_link(f"{base}/slow"))
    assert time.monotonic() - started < 1.5
    assert html == _link(f"{base}/slow")
    assert expander.stats["failed"] == 1


def test_slow_drip_body_is_cut_at_the_deadline_and_parsed(base, make_expander):
    started = time.monotonic()
    html = make_expander(timeout=0.5).expand(_link(f"{base}/drip"))
    assert time.monotonic() - started < 1.5
    assert ">Drip</a>" in html


def test_slow_drip_headers_are_cut_at_the_deadline(base, make_expander):
    started = time.monotonic()
    html = make_expander(timeout=0.5).expand(_link(f"{base}/header-drip"))
    assert time.monotonic() - started < 1.5
    assert "<blockquote>" not in html


def test_huge_page_is_read_only_up_to_the_cap(server, base, make_expander):
    started = time.monotonic()
    html = make_expander(max_bytes=64 * 1024).expand(_link(f"{base}/huge"))
    assert time.monotonic() - started < 3
    assert ">Huge</a>" in html
    deadline = time.monotonic() + 5
    while server.huge_sent < HUGE_BYTES and "/huge" in server.seen and time.monotonic() < deadline:
        time.sleep(0.05)  # give the server a moment to notice the hang-up
    assert server.huge_sent < HUGE_BYTES


def test_size_cap_hides_what_comes_after_it(base, make_expander):
    url = f"{base}/late-title"
    assert f">{url}</a>" in make_expander(max_bytes=64 * 1024).expand(_link(url))
    assert ">Late</a>" in make_expander(max_bytes=1024 * 1024).expand(_link(url))


def test_non_html_is_not_previewed(base, make_expander):
    expander = make_expander()
    assert expander.expand(_link(f"{base}/image")) == _link(f"{base}/image")
    assert expander.stats == dict(expander.stats, failed=1, expanded=0)


def test_redirects_are_followed_up_to_five(base, make_expander):
    expander = make_expander()
    assert ">Hello page</a>" in expander.expand(_link(f"{base}/chain?n=5"))
    assert "<blockquote>" not in expander.expand(_link(f"{base}/chain?n=6"))


def test_loopback_is_refused_by_the_guard_and_logged(server, base, make_expander, caplog):
    caplog.set_level(logging.INFO, logger="monolith.links")
    expander = make_expander(allow_private=False)
    assert expander.expand(_link(f"{base}/titled")) == _link(f"{base}/titled")
    assert server.seen == []
    assert expander.stats["refused"] == 1
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "loopback" in refusals[0].getMessage()


def test_loopback_is_allowed_with_the_opt_in(server, base, make_expander):
    assert "<blockquote>" in make_expander(allow_private=True).expand(_link(f"{base}/titled"))
    assert server.seen == ["/titled"]


def test_redirect_to_a_private_address_is_refused(server, base, make_expander, monkeypatch, caplog):
    # Pretend the test server's own address is public, so only the redirect
    # hop meets the real guard.
    real = links.refusal_reason
    monkeypatch.setattr(links, "refusal_reason", lambda a: None if a == "127.0.0.1" else real(a))
    caplog.set_level(logging.INFO, logger="monolith.links")
    expander = make_expander(allow_private=False)
    good = f"{base}/redirect?to=/titled"
    assert ">Hello page</a>" in expander.expand(_link(good))
    bad = f"{base}/redirect?to=http://169.254.169.254/latest/meta-data/"
    assert "<blockquote>" not in expander.expand(_link(bad))
    assert expander.stats["refused"] == 1
    assert any("169.254.169.254" in r.getMessage() for r in caplog.records)


def test_slow_name_resolution_counts_against_the_timeout(monkeypatch, make_expander):
    # No slow DNS server to run here: slow down the lookup of one made-up name.
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host == "slow-dns.test":
            time.sleep(2)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    started = time.monotonic()
    html = make_expander(timeout=0.5).expand(_link("http://slow-dns.test/"))
    assert time.monotonic() - started < 1.5
    assert "<blockquote>" not in html


def test_connection_goes_to_the_checked_address_without_resolving_again(
    server, base, monkeypatch, make_expander
):
    # DNS rebinding: the name answers 127.0.0.1 once, then something else.
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            lookups.append(host)
            if len(lookups) > 1:
                raise socket.gaierror(socket.EAI_NONAME, "rebound")
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = server.server_address[1]
    html = make_expander().expand(_link(f"http://rebind.test:{port}/titled"))
    assert ">Hello page</a>" in html
    assert lookups == ["rebind.test"]
    assert server.hosts == [f"rebind.test:{port}"]


def test_redirect_to_another_scheme_is_refused(base):
    with pytest.raises(RefusedURL):
        fetch_html(f"{base}/redirect?to=file:///etc/passwd", allow_private=True, timeout=2)


@pytest.mark.parametrize(
    "url",
    ["http://", "http://[::1", "http://exa mple.example/", "http://127.0.0.1:99999/", "http://127.0.0.1:1/"],
)
def test_bad_urls_raise_link_error_and_expand_skips_them(url, make_expander):
    with pytest.raises(LinkError):
        fetch_html(url, allow_private=True, timeout=2)
    html = f'<a href="{url}">x</a>'
    assert make_expander(timeout=2).expand(html) == html


# ------------------------------------------------------------ background


def test_submit_calls_on_done_from_a_worker_thread(base, make_expander):
    calls = []
    expander = make_expander()
    future = expander.submit(_link(f"{base}/titled"), lambda html: calls.append((html, threading.get_ident())))
    result = future.result(timeout=10)
    assert calls == [(result, calls[0][1])]
    assert calls[0][1] != threading.get_ident()
    assert ">Hello page</a>" in result
    assert expander.stats["submitted"] == 1


def test_on_done_is_skipped_when_nothing_was_appended(make_expander):
    calls = []
    future = make_expander().submit("no links here", calls.append)
    assert future.result(timeout=10) == "no links here"
    assert calls == []


def test_on_done_errors_are_logged_not_raised(base, make_expander, caplog):
    def boom(html):
        raise RuntimeError("callback bug")

    expander = make_expander()
    future = expander.submit(_link(f"{base}/titled"), boom)
    assert "<blockquote>" in future.result(timeout=10)
    assert expander.stats["callback_errors"] == 1
    assert any("callback failed" in r.getMessage() for r in caplog.records)


def test_full_queue_drops_and_counts(server, base, make_expander):
    expander = make_expander(max_workers=1, max_queue=1, timeout=5)
    html = _link(f"{base}/block")
    first = expander.submit(html, lambda _: None)
    second = expander.submit(html, lambda _: None)
    assert first is not None and second is not None
    assert expander.submit(html, lambda _: None) is None
    assert expander.stats["dropped"] == 1
    server.release.set()
    first.result(timeout=10)
    second.result(timeout=10)
    assert expander.submit(_link(f"{base}/titled"), lambda _: None) is not None
    assert expander.stats["submitted"] == 3


def test_submit_after_shutdown_drops(make_expander):
    expander = make_expander()
    expander.shutdown()
    assert expander.submit("x", lambda _: None) is None
    assert expander.stats["dropped"] == 1


# ------------------------------------------------------------ HTTPS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    _start(srv)
    yield srv, str(cert)
    _stop(srv)


@pytest.mark.integration
def test_https_verifies_the_certificate_against_the_url_host(tls_server, make_expander):
    srv, cert = tls_server
    port = srv.server_address[1]
    expander = make_expander(verify=cert)
    assert ">Hello page</a>" in expander.expand(_link(f"https://localhost:{port}/titled"))
    # Same server and address, but the certificate does not name 127.0.0.1.
    assert "<blockquote>" not in expander.expand(_link(f"https://127.0.0.1:{port}/titled"))
