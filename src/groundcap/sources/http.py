"""``http(s)://`` list entries: one streamed GET with a connect timeout, a read timeout and a byte limit.

The standard library's client, not fsspec's: fsspec sends a HEAD then a GET with no timeout unless one is
passed through aiohttp, and reports every failure to get a size (a refused connection, a 500) as
``FileNotFoundError``. Here a failure is named for what it is (refused, timed out, HTTP status with the
start of the server's answer), and a file over the limit is refused from its ``Content-Length`` or as
soon as the stream passes the limit, never downloaded whole.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

from groundcap.sources.entry import Reader, Refused
from groundcap.sources.policy import KEY, SourcePolicy

CHUNK = 1 << 16
_BODY_SHOWN = 300  # characters of an error page kept in the reason (redacted by the stage)


def reader(url: str, policy: SourcePolicy) -> Reader:
    def read(limit: int) -> bytes:
        return get(url, policy, limit)

    return read


def get(url: str, policy: SourcePolicy, limit: int) -> bytes:
    """At most ``limit`` bytes of ``url``; :class:`Refused` with a reason on any failure."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    headers = {"User-Agent": "groundcap", "Accept-Encoding": "identity"}
    if parts.username is not None:  # user:password@host is sent as basic auth, never as part of the host
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = f"[{host}]" if ":" in host else host
        netloc = netloc if parts.port is None else f"{netloc}:{parts.port}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    deadline = time.monotonic() + policy.file_timeout_s
    try:
        with _opener(policy).open(urllib.request.Request(url, headers=headers)) as response:
            return _stream(response, limit, deadline, policy)
    except urllib.error.HTTPError as exc:
        raise Refused(f"HTTP {exc.code} {exc.reason} from {host}: {_body(exc)}") from None
    except urllib.error.URLError as exc:
        raise Refused(_describe(exc.reason, host, connecting=True, policy=policy)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise Refused(_describe(exc, host, connecting=False, policy=policy)) from None


def _stream(response, limit: int, deadline: float, policy: SourcePolicy) -> bytes:
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) >= limit:
        raise Refused(f"announces {announced} bytes, more than ingest.max_bytes allows; not downloaded")
    chunks, got = [], 0
    while got < limit:
        if time.monotonic() > deadline:
            raise Refused(f"download not finished within {KEY}.file_timeout_s={policy.file_timeout_s:g} s")
        chunk = response.read1(min(CHUNK, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _body(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(_BODY_SHOWN).decode("utf-8", "replace")
    except Exception:  # the error page itself is cut off or times out: the status says enough
        return "(no readable body)"
    return " ".join(text.split()) or "(empty body)"


def _describe(exc: BaseException | str, host: str, *, connecting: bool, policy: SourcePolicy) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(exc, TimeoutError):
        if connecting:
            return f"no connection to {host} within {KEY}.connect_timeout_s={policy.connect_timeout_s:g} s"
        return f"{host} sent nothing for {KEY}.read_timeout_s={policy.read_timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host}: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure with {host}: {exc.reason or exc}"
    if isinstance(exc, (ConnectionError, http.client.HTTPException)):
        return f"connection to {host} broken: {type(exc).__name__}: {exc}"
    what = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else exc
    return f"cannot fetch from {host}: {what}"


class _TimedHTTP(http.client.HTTPConnection):
    """Connects within ``connect_s``, then waits at most ``read_s`` for each read."""

    def __init__(self, *args, connect_s: float, read_s: float, **kwargs) -> None:
        kwargs["timeout"] = connect_s
        super().__init__(*args, **kwargs)
        self.read_s = read_s

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_s)


class _TimedHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args, connect_s: float, read_s: float, **kwargs) -> None:
        kwargs["timeout"] = connect_s
        super().__init__(*args, **kwargs)
        self.read_s = read_s

    def connect(self) -> None:  # the TLS handshake counts as connecting
        super().connect()
        self.sock.settimeout(self.read_s)


class _Handler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    def __init__(self, policy: SourcePolicy) -> None:
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self.times = {"connect_s": policy.connect_timeout_s, "read_s": policy.read_timeout_s}

    def http_open(self, req):
        return self.do_open(_TimedHTTP, req, **self.times)

    def https_open(self, req):
        return self.do_open(_TimedHTTPS, req, context=self._context, **self.times)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects (http(s) only), never carrying the entry's credentials to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).hostname != urllib.parse.urlsplit(req.full_url).hostname:
            new.remove_header("Authorization")
        return new


def _opener(policy: SourcePolicy) -> urllib.request.OpenerDirector:
    """Proxies from the environment, redirects among http(s) only (no ftp, file or data handler)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _Handler(policy),
                    urllib.request.HTTPDefaultErrorHandler(), _Redirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener
