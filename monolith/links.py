"""Link previews for messages: fetch each linked page, append its title.

The core is pure (`link_urls`, `parse_preview`, `preview_html`,
`refusal_reason`); `fetch_html` is the network edge; `LinkExpander` runs
expansions off the request path in a bounded thread pool.

A failed link (refused by the SSRF guard, unreachable, slow, not HTML, not a
2xx answer, too many redirects) appends nothing: a preview that says only
"No description found." for a page that never answered is noise. A page that
was fetched but is truncated (size cap or deadline) is parsed as far as read.
"""

import ipaddress
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from html import escape
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

log = logging.getLogger(__name__)

FALLBACK_DESCRIPTION = "No description found."
MAX_REDIRECTS = 5
# A message with hundreds of links must not hold a worker for minutes.
MAX_LINKS = 10
MAX_TEXT = 300
_HEADERS = {
    "User-Agent": "Flack-LinkPreview/1.0",
    "Accept": "text/html",
    # Uncompressed only, so the size cap counts what the server really sends
    # and a small gzip bomb cannot inflate past it.
    "Accept-Encoding": "identity",
}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class LinkError(Exception):
    """A link that yields no preview; the message says why, in one line."""


class RefusedURL(LinkError):
    """The URL's scheme or address is not allowed (SSRF guard)."""


# ---------------------------------------------------------------- pure core


def link_urls(html: str) -> list[str]:
    """Return the distinct http(s) hrefs of `<a>` tags in `html`, in order.

    Links inside a `<blockquote>` are previews already appended, so expanding
    twice does not preview the previews. At most MAX_LINKS are returned.
    """
    urls: list[str] = []
    for anchor in BeautifulSoup(html, "html.parser").find_all("a", href=True):
        href = str(anchor["href"]).strip()
        if anchor.find_parent("blockquote") or href in urls:
            continue
        if href.partition(":")[0].lower() in ("http", "https"):
            urls.append(href)
    return urls[:MAX_LINKS]


def _tidy(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    return " ".join(text.split())[:MAX_TEXT] or None


def _meta(soup: BeautifulSoup, key: str) -> str | None:
    # Open Graph says property=, but many sites write name= for both.
    for attr in ("property", "name"):
        tag = soup.find("meta", attrs={attr: key})
        if tag is not None and _tidy(tag.get("content")):
            return _tidy(tag.get("content"))
    return None


def parse_preview(body: bytes, charset: str | None = None) -> tuple[str | None, str | None]:
    """Return (title, description) found in an HTML page, either may be None.

    The title is og:title, else `<title>`; the description is og:description,
    else meta description. Whitespace is collapsed and each is cut to MAX_TEXT
    characters. `body` may be truncated HTML.
    """
    soup = BeautifulSoup(body, "html.parser", from_encoding=charset)
    title = _meta(soup, "og:title")
    if title is None and soup.title is not None:
        title = _tidy(soup.title.get_text())
    description = _meta(soup, "og:description") or _meta(soup, "description")
    return title, description


def preview_html(url: str, title: str | None, description: str | None) -> str:
    """Return the `<blockquote>` appended to a message for `url`, all escaped.

    The title falls back to the URL, the description to FALLBACK_DESCRIPTION.
    """
    return (
        f'<blockquote><p><a href="{escape(url, quote=True)}">{escape(title or url)}</a></p>'
        f"<p>{escape(description or FALLBACK_DESCRIPTION)}</p></blockquote>"
    )


def refusal_reason(address: str) -> str | None:
    """Return why the SSRF guard refuses an IP address, or None if it is public.

    Refused: private, loopback, link-local, multicast, reserved, unspecified
    and anything else not globally routable, in IPv4 and IPv6, including IPv4
    addresses embedded in IPv6 (mapped, 6to4, NAT64).
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (reason := refusal_reason(str(embedded))):
            return f"{reason} (embedded in {ip})"
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


# ------------------------------------------------------------- network edge


class _Deadline:
    """A wall-clock limit for one fetch, enforced on every socket it opened.

    Socket timeouts bound each recv, not a whole read: a server dripping one
    byte a second would never trip them. At the deadline a timer shuts the
    sockets down, which wakes any blocked read (headers, TLS, body).
    """

    def __init__(self, seconds: float) -> None:
        self.expires = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._fired = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self._fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            for sock in self._sockets:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the connection itself


class _PinnedConnectionMixin:
    """Connect to addresses resolved (and checked) beforehand, never re-resolve.

    Why an adapter and not "URL with the IP + Host header": the connection
    keeps the real hostname, so TLS gets the right SNI and the certificate is
    verified against the name, while the TCP connection can only go to the
    address the SSRF guard approved (no DNS rebinding between check and use).
    """

    def __init__(self, *args, pinned_ips: list[str], deadline: _Deadline, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pinned_ips = pinned_ips
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        error: OSError | None = None
        for ip in self._pinned_ips:
            try:
                sock = create_connection(
                    (ip, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"Connection to {ip} timed out.") from exc
            except OSError as exc:
                error = exc
                continue
            self._deadline.watch(sock)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


class _PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to `pinned_ips`."""

    def __init__(self, pinned_ips: list[str], deadline: _Deadline) -> None:
        super().__init__(max_retries=0)
        self._conn_kw = {"pinned_ips": pinned_ips, "deadline": deadline}
        self._pools: list[urllib3.HTTPConnectionPool] = []

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        host, port = host_params["host"], host_params["port"]
        if host_params["scheme"] == "https":
            pool = urllib3.HTTPSConnectionPool(host, port, maxsize=1, **pool_kwargs, **self._conn_kw)
            pool.ConnectionCls = _PinnedHTTPSConnection
        else:
            pool = urllib3.HTTPConnectionPool(host, port, maxsize=1, **self._conn_kw)
            pool.ConnectionCls = _PinnedHTTPConnection
        self._pools.append(pool)
        return pool

    def close(self) -> None:
        super().close()
        for pool in self._pools:
            pool.close()


def _resolve(host: str, port: int, within: float) -> list[str]:
    """Return the addresses `host` resolves to (IP literals resolve to themselves).

    getaddrinfo cannot be interrupted, so it runs in a daemon thread that is
    abandoned (it ends with the resolver's own timeout) if it outlasts `within`.
    """
    done = threading.Event()
    outcome: list = []

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            outcome.append(exc)
        done.set()

    threading.Thread(target=lookup, name="link-dns", daemon=True).start()
    if not done.wait(within):
        raise LinkError(f"resolving {host} timed out")
    if isinstance(outcome[0], Exception):
        raise LinkError(f"cannot resolve {host}: {outcome[0]}")
    return list(dict.fromkeys(info[4][0] for info in outcome[0]))


def _read_capped(response: requests.Response, max_bytes: int, deadline: _Deadline) -> bytes:
    """Read at most `max_bytes` of the body, stopping early at the deadline."""
    chunks: list[bytes] = []
    total = 0
    try:
        while total < max_bytes and deadline.remaining() > 0:
            # read1 returns what one recv gives instead of waiting for a full
            # buffer, so the deadline is checked as data trickles in.
            chunk = response.raw.read1(min(64 * 1024, max_bytes - total), decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
        pass  # the deadline shut the socket or the server hung up: keep what came
    return b"".join(chunks)[:max_bytes]


def _content_type(header: str) -> tuple[str, str | None]:
    # Only an explicit charset counts; otherwise the page's <meta charset> is
    # used (requests would assume ISO-8859-1 for any text/* type).
    mime, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip(" \"'"):
            charset = value.strip(" \"'")
    return mime.strip().lower(), charset


def _checked_target(
    url: str, allow_private: bool, deadline: _Deadline
) -> tuple[requests.PreparedRequest, list[str]]:
    try:
        request = requests.Request("GET", url, headers=_HEADERS).prepare()
        parts = urlsplit(request.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (requests.RequestException, ValueError, UnicodeError) as exc:
        raise LinkError(f"invalid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise RefusedURL(f"scheme {parts.scheme!r} is not http or https")
    if not parts.hostname:
        raise LinkError("invalid URL: no host")
    addresses = _resolve(parts.hostname, port, deadline.remaining())
    if not allow_private:
        for address in addresses:
            if reason := refusal_reason(address):
                raise RefusedURL(f"{parts.hostname} resolves to {address} ({reason})")
    return request, addresses


def fetch_html(
    url: str,
    *,
    allow_private: bool,
    timeout: float = 3.0,
    max_bytes: int = 512 * 1024,
    verify: bool | str = True,
) -> tuple[bytes, str | None]:
    """Fetch an HTML page; return (up to `max_bytes` of body, charset or None).

    Used by LinkExpander. Redirects are followed by hand (MAX_REDIRECTS),
    each hop's scheme and addresses checked again; the whole fetch, all hops
    included, ends within `timeout` seconds. Raises RefusedURL when the guard
    refuses a hop, LinkError for any other failure (network, status, type).
    """
    deadline = _Deadline(timeout)
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            request, addresses = _checked_target(url, allow_private, deadline)
            left = deadline.remaining()
            if left <= 0:
                raise LinkError("timed out")
            with requests.Session() as session:
                session.trust_env = False  # no proxies from the environment: they would resolve for us
                adapter = _PinnedAdapter(addresses, deadline)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                response = session.send(
                    request, stream=True, allow_redirects=False, timeout=(left, left), verify=verify
                )
                with response:
                    if response.is_redirect:
                        url = urljoin(request.url, response.headers["location"])
                        continue
                    if not 200 <= response.status_code < 300:
                        raise LinkError(f"HTTP status {response.status_code}")
                    mime, charset = _content_type(response.headers.get("content-type", ""))
                    if mime != "text/html":
                        raise LinkError(f"content type {mime or 'missing'} is not text/html")
                    return _read_capped(response, max_bytes, deadline), charset
        raise LinkError(f"more than {MAX_REDIRECTS} redirects")
    except requests.RequestException as exc:
        raise LinkError(f"{type(exc).__name__} after {timeout - deadline.remaining():.1f}s") from exc
    finally:
        deadline.cancel()


# ----------------------------------------------------------------- expander


class LinkExpander:
    """Append previews of the links in a message's HTML, now or in the background.

    `allow_private=False` (the default of every profile: see
    ``LINK_EXPANSION_ALLOW_PRIVATE``) turns the SSRF guard on. `stats` counts
    jobs (`submitted`, `dropped` when the queue is full or after shutdown) and
    links (`expanded`, `failed`, of which `refused` by the guard), plus
    `callback_errors`. Thread-safe.
    """

    def __init__(
        self,
        allow_private: bool,
        timeout: float = 3.0,
        max_bytes: int = 512 * 1024,
        max_workers: int = 4,
        max_queue: int = 100,
        *,
        verify: bool | str = True,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.verify = verify  # a CA bundle path lets tests use a private CA
        self._capacity = max_workers + max_queue
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="link-expander")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self._counts: Counter[str] = Counter(
            dict.fromkeys(
                ("submitted", "expanded", "failed", "refused", "dropped", "callback_errors"), 0
            )
        )

    @property
    def stats(self) -> dict[str, int]:
        """Return a snapshot of the counters."""
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def expand(self, html: str) -> str:
        """Return `html` with a preview appended for each http(s) link; blocks.

        Never raises for network or parse errors: a failed link adds nothing.
        Each link takes at most `timeout` seconds.
        """
        return html + "".join(filter(None, map(self._preview, link_urls(html))))

    def _preview(self, url: str) -> str | None:
        try:
            body, charset = fetch_html(
                url,
                allow_private=self.allow_private,
                timeout=self.timeout,
                max_bytes=self.max_bytes,
                verify=self.verify,
            )
            title, description = parse_preview(body, charset)
        except RefusedURL as exc:
            # a warning: a message tried to make the server fetch a private address
            log.warning("link expansion refused %.200s: %s", url, exc)
            self._count("refused")
            self._count("failed")
            return None
        except LinkError as exc:
            log.debug("link expansion failed %.200s: %s", url, exc)
            self._count("failed")
            return None
        except Exception as exc:  # noqa: BLE001 - hostile HTML must not break a message
            log.warning("link expansion could not parse %.200s: %s", url, type(exc).__name__)
            self._count("failed")
            return None
        self._count("expanded")
        return preview_html(url, title, description)

    def submit(self, html: str, on_done: Callable[[str], None]) -> Future | None:
        """Expand `html` in the background; call `on_done(new_html)` from a worker.

        `on_done` is called only if a preview was appended (the Future's result
        is the final HTML either way); its exceptions are logged, never raised.
        Returns None, and counts `dropped`, when the queue is full or the
        expander is shut down. Safe to call from a request handler: never blocks.
        """
        with self._lock:
            if self._closed or self._in_flight >= self._capacity:
                self._counts["dropped"] += 1
                log.info("link expansion dropped: queue full or shut down")
                return None
            self._in_flight += 1
            self._counts["submitted"] += 1
        try:
            future = self._executor.submit(self._run, html, on_done)
        except RuntimeError:  # shutdown() raced us
            with self._lock:
                self._in_flight -= 1
                self._counts["dropped"] += 1
            return None
        return future

    def _run(self, html: str, on_done: Callable[[str], None]) -> str:
        # The slot is released here, not in a done-callback, so a caller that
        # sees the Future finish can submit again at once.
        try:
            try:
                result = self.expand(html)
            except Exception:  # noqa: BLE001 - a bug here must not go unseen in a Future
                log.exception("link expansion job failed")
                return html
            if result != html:
                try:
                    on_done(result)
                except Exception:  # noqa: BLE001 - the caller's bug must not kill the worker
                    log.exception("link expansion callback failed")
                    self._count("callback_errors")
            return result
        finally:
            with self._lock:
                self._in_flight -= 1

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting jobs, cancel queued ones, and (if `wait`) finish running ones."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)
