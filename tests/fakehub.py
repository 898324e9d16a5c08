"""A loopback fake of the Hugging Face Hub: the endpoints huggingface_hub 2.4.0 calls to publish a dataset.

Enough to run ``create_repo``, ``list_repo_refs``, ``upload_folder`` (with ``delete_patterns``) and
``create_tag`` against, over real HTTP, with every request recorded, so a test can check what a
publish sent (and that it never sent its token where it should not), not just what it printed:

- ``POST /api/repos/create``: a repo with one commit holding ``.gitattributes``, like the Hub's; 409 if it exists
- ``POST /api/validate-yaml``: the README metadata check ``upload_folder`` makes first
- ``GET  /api/datasets/{repo}/refs``: branches and tags
- ``GET  /api/datasets/{repo}/revision/{revision}``: repo info, which ``create_commit`` reads when nothing changed
- ``GET  /api/datasets/{repo}/tree/{revision}``: the file listing ``delete_patterns`` is matched against
- ``POST /api/datasets/{repo}/preupload/{revision}``: ``lfs`` for the ``.gitattributes`` patterns, else ``regular``
- ``POST /datasets/{repo}.git/info/lfs/objects/batch``: "basic" transfer to a presigned upload URL here
- ``PUT  /datasets/{repo}.git/info/lfs/objects/upload/{oid}?signature=``: the presigned upload (no token, as on S3)
- ``POST /datasets/{repo}.git/info/lfs/objects/verify``
- ``POST /api/datasets/{repo}/commit/{revision}``: the ndjson commit
- ``POST /api/datasets/{repo}/tag/{revision}``: 409 if the tag exists

Only dataset repos exist here: a call that forgets ``repo_type="dataset"`` gets a 404 (a 400 from
create). Every request but the presigned upload needs ``Authorization: Bearer <token>`` (401 otherwise).

Clients must run with ``HF_HUB_DISABLE_XET=1``: with hf_xet installed, huggingface_hub uploads
through Xet's CAS protocol, which this fake does not speak; without it, uploads take the LFS route.
Run them with ``HF_HUB_DISABLE_TELEMETRY=1`` too, or huggingface_hub first fetches its agent-harness
registry (``GET /api/agent-harnesses``, no token; answered 404 here, which it ignores).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

LFS_PATTERNS = ("*.parquet", "*.tar", "*.png", "*.jpg", "*.arrow")
LFS_ABOVE = 10 * 1024 * 1024  # the Hub stores bigger files in LFS whatever their name
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"


@dataclass
class Raw:
    """A download: a file's bytes (or a range of them) with the headers the Hub sends."""

    body: bytes
    headers: dict[str, str]
    status: int = 200


class HubError(Exception):
    """An error answer: its status, ``{"error": message, **extra}`` as body, ``code`` as X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    json: object = None  # the body, when it was JSON


@dataclass
class Repo:
    visibility: str | None
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # oid -> {path: content}
    parents: dict[str, str | None] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> str:
        parent = self.branches.get(branch)
        digests = "".join(f"{path}\0{hashlib.sha256(data).hexdigest()}\n" for path, data in sorted(files.items()))
        oid = hashlib.sha1(f"{parent}\n{digests}".encode()).hexdigest()
        self.commits[oid], self.parents[oid], self.messages[oid] = dict(files), parent, message
        self.branches[branch] = oid
        return oid

    def resolve(self, revision: str) -> str:
        oid = self.branches.get(revision) or self.tags.get(revision) or (revision if revision in self.commits else None)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid


def _lfs(path: str, size: int) -> bool:
    return size > LFS_ABOVE or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _oid(path: str, data: bytes) -> str:
    """What the Hub reports as a file's oid at preupload: sha256 for LFS files, the git blob sha1 otherwise."""
    return hashlib.sha256(data).hexdigest() if _lfs(path, len(data)) else _git_oid(data)


class FakeHub:
    """The fake Hub, serving on 127.0.0.1 in a thread while used as a context manager."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[Request] = []
        self.fail_status: int | None = None  # answer every request with this status, echoing its Authorization
        self.before_tag = None  # called with (repo, tag) before a tag is created: a concurrent publisher, a failure
        self._secret = hashlib.sha256(token.encode() + b"presign").digest()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # --- routing -----------------------------------------------------------------------------------------

    def handle(self, request: Request, body: bytes) -> tuple[int, object, str | None]:
        """(status, JSON body or Raw download, X-Error-Code) answering one request."""
        with self._lock:
            self.requests.append(request)
            try:
                answer = self._route(request, body)
                return (answer.status if isinstance(answer, Raw) else 200), answer, None
            except HubError as exc:
                return exc.status, {"error": str(exc), **exc.extra}, exc.code

    def _route(self, request: Request, body: bytes) -> object:
        if self.fail_status is not None:
            auth = request.headers.get("authorization")
            raise HubError(self.fail_status, f"internal error handling a request with Authorization: {auth}")
        for method, pattern, route in self._routes:
            if method == request.method and (match := re.fullmatch(pattern, request.path)):
                self._authorize(request, match)
                return route(self, request, body, **match.groupdict())
        raise HubError(404, f"no route {request.method} {request.path}", "EntryNotFound")

    def _authorize(self, request: Request, match: re.Match) -> None:
        if "oid" in match.groupdict():  # the presigned upload: its signature stands for the token
            signature = (request.query.get("signature") or [""])[0]
            if not hmac.compare_digest(signature, self._sign(match["oid"])):
                raise HubError(403, "bad signature")
        elif request.headers.get("authorization") != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _sign(self, oid: str) -> str:
        return hmac.new(self._secret, oid.encode(), "sha256").hexdigest()

    def _repo(self, repo: str) -> Repo:
        if repo not in self.repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return self.repos[repo]

    def _files(self, repo: str, revision: str) -> dict[str, bytes]:
        r = self._repo(repo)
        return r.commits[r.resolve(unquote(revision))]

    # --- endpoints -----------------------------------------------------------------------------------------

    def create_repo(self, request: Request, body: bytes) -> dict:
        payload = request.json
        if payload.get("type") != "dataset":
            raise HubError(400, f"this fake holds dataset repos only, not {payload.get('type')!r}")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.endpoint}/datasets/{repo_id}"
        if repo_id in self.repos:  # exist_ok reads the url from this answer
            raise HubError(409, "You already created this dataset repo", url=url)
        self.repos[repo_id] = Repo(visibility=payload.get("visibility"))
        self.repos[repo_id].commit({".gitattributes": GITATTRIBUTES}, "initial commit")
        return {"url": url, "name": repo_id}

    def validate_yaml(self, request: Request, body: bytes) -> dict:
        return {"errors": [], "warnings": []}

    def refs(self, request: Request, body: bytes, repo: str) -> dict:
        r = self._repo(repo)

        def refs(kind: str, names: dict[str, str]) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": oid} for n, oid in sorted(names.items())]

        return {"branches": refs("heads", r.branches), "tags": refs("tags", r.tags), "converts": [],
                "pullRequests": []}

    def info(self, request: Request, body: bytes, repo: str, revision: str) -> dict:
        r = self._repo(repo)
        return {"id": repo, "sha": r.resolve(unquote(revision)), "private": r.visibility == "private",
                "siblings": [{"rfilename": path} for path in sorted(self._files(repo, revision))]}

    def tree(self, request: Request, body: bytes, repo: str, revision: str, path: str | None = None) -> list[dict]:
        files = self._files(repo, revision)
        recursive = (request.query.get("recursive") or ["false"])[0].lower() in ("true", "1")
        prefix = f"{path.strip('/')}/" if path and path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        below = {p[len(prefix):]: p for p in files if p.startswith(prefix)}
        paths = sorted(below) if recursive else sorted(p for p in below if "/" not in p)
        all_folders = {"/".join(p.split("/")[:i]) for p in below for i in range(1, p.count("/") + 1)}
        folders = sorted(all_folders if recursive else {d for d in all_folders if "/" not in d})
        return [{"type": "directory", "path": prefix + d, "oid": _git_oid(d.encode())} for d in folders] + [
            _entry(below[p], files[below[p]]) for p in paths]

    def paths_info(self, request: Request, body: bytes, repo: str, revision: str) -> list[dict]:
        files = self._files(repo, revision)
        asked = request.json["paths"] if isinstance(request.json, dict) else parse_qs(body.decode()).get("paths", [])
        out = []
        for path in asked:
            path = path.strip("/")
            if path in files:
                out.append(_entry(path, files[path]))
            elif any(p.startswith(f"{path}/") for p in files):
                out.append({"type": "directory", "path": path, "oid": _git_oid(path.encode())})
        return out

    def resolve(self, request: Request, body: bytes, repo: str, revision: str, path: str) -> Raw:
        """A file's bytes, or the ``Range: bytes=a-b`` of them (206), with the headers downloads read."""
        files = self._files(repo, revision)
        if path not in files:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = files[path]
        etag = hashlib.sha256(data).hexdigest() if _lfs(path, len(data)) else _git_oid(data)
        headers = {"X-Repo-Commit": self._repo(repo).resolve(unquote(revision)), "ETag": f'"{etag}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if _lfs(path, len(data)):
            headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", ""))
        if not match or not data:
            return Raw(data, headers)
        start, end = match.groups()
        first = int(start) if start else max(0, len(data) - int(end))
        last = min(len(data) - 1, int(end)) if start and end else len(data) - 1
        return Raw(data[first:last + 1], headers | {"Content-Range": f"bytes {first}-{last}/{len(data)}"}, 206)

    def info_main(self, request: Request, body: bytes, repo: str) -> dict:
        return self.info(request, body, repo, "main")

    def preupload(self, request: Request, body: bytes, repo: str, revision: str) -> dict:
        files = self._files(repo, revision)
        return {"files": [
            {"path": f["path"], "uploadMode": "lfs" if _lfs(f["path"], f["size"]) else "regular", "shouldIgnore": False,
             "oid": _oid(f["path"], files[f["path"]]) if f["path"] in files else None}
            for f in request.json["files"]
        ]}

    def lfs_batch(self, request: Request, body: bytes, repo: str) -> dict:
        self._repo(repo)
        base = f"{self.endpoint}/datasets/{repo}.git/info/lfs/objects"
        return {"transfer": "basic", "objects": [
            {"oid": o["oid"], "size": o["size"], "authenticated": True} | ({} if o["oid"] in self.lfs else {"actions": {
                "upload": {"href": f"{base}/upload/{o['oid']}?signature={self._sign(o['oid'])}"},
                "verify": {"href": f"{base}/verify"},
            }})
            for o in request.json["objects"]
        ]}

    def lfs_upload(self, request: Request, body: bytes, repo: str, oid: str) -> dict:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not hash to {oid}")
        self.lfs[oid] = body
        return {}

    def lfs_verify(self, request: Request, body: bytes, repo: str) -> dict:
        oid, size = request.json["oid"], request.json["size"]
        if oid not in self.lfs or len(self.lfs[oid]) != size:
            raise HubError(404, f"LFS object {oid} of {size} bytes not found")
        return {}

    def commit(self, request: Request, body: bytes, repo: str, revision: str) -> dict:
        r = self._repo(repo)
        branch = unquote(revision)
        if branch not in r.branches:
            raise HubError(400, f"cannot commit to {branch}: not a branch")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        files = dict(r.commits[r.branches[branch]])
        for line in lines[1:]:
            _apply(files, line["key"], line["value"], self.lfs)
        oid = r.commit(files, lines[0]["value"]["summary"], branch)
        return {"commitUrl": f"{self.endpoint}/datasets/{repo}/commit/{oid}", "commitOid": oid, "success": True,
                "pullRequestUrl": None}

    def tag(self, request: Request, body: bytes, repo: str, revision: str) -> dict:
        r = self._repo(repo)
        oid, name = r.resolve(unquote(revision)), request.json["tag"]
        if self.before_tag:
            self.before_tag(r, name)
        if name in r.tags:
            raise HubError(409, f"Tag {name} already exists")
        r.tags[name] = oid
        return {}

    _routes = (
        ("POST", r"/api/repos/create", create_repo),
        ("POST", r"/api/validate-yaml", validate_yaml),
        ("GET", rf"/api/datasets/{_REPO}/refs", refs),
        ("GET", rf"/api/datasets/{_REPO}/revision/(?P<revision>[^/]+)", info),
        ("GET", rf"/api/datasets/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", tree),
        ("GET", rf"/api/datasets/{_REPO}", info_main),
        ("POST", rf"/api/datasets/{_REPO}/paths-info/(?P<revision>[^/]+)", paths_info),
        ("GET", rf"/datasets/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", resolve),
        ("HEAD", rf"/datasets/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", resolve),
        ("POST", rf"/api/datasets/{_REPO}/preupload/(?P<revision>[^/]+)", preupload),
        ("POST", rf"/api/datasets/{_REPO}/commit/(?P<revision>[^/]+)", commit),
        ("POST", rf"/api/datasets/{_REPO}/tag/(?P<revision>[^/]+)", tag),
        ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", lfs_batch),
        ("PUT", rf"/datasets/{_REPO}\.git/info/lfs/objects/upload/(?P<oid>[0-9a-f]{{64}})", lfs_upload),
        ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/verify", lfs_verify),
    )


def _entry(path: str, data: bytes) -> dict:
    """A file as the tree and paths-info endpoints describe it."""
    lfs = {"lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
    return {"type": "file", "path": path, "size": len(data), "oid": _git_oid(data),
            **(lfs if _lfs(path, len(data)) else {})}


def _apply(files: dict[str, bytes], key: str, value: dict, lfs: dict[str, bytes]) -> None:
    """One commit operation, applied to the files of the parent commit."""
    path = value["path"]
    if key == "file":
        files[path] = base64.b64decode(value["content"])
    elif key == "lfsFile":
        if value["oid"] not in lfs:
            raise HubError(422, f"LFS object {value['oid']} of {path} was never uploaded")
        files[path] = lfs[value["oid"]]
    elif key == "deletedFile":
        if files.pop(path, None) is None:
            raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
    elif key == "deletedFolder":
        for gone in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
            del files[gone]
    else:
        raise HubError(400, f"unknown commit operation {key!r}")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            media = headers.get("content-type", "").split(";")[0]
            parsed = json.loads(body) if media.endswith(("/json", "+json")) and body else None  # not x-ndjson
            request = Request(self.command, unquote(url.path), parse_qs(url.query), headers, parsed)
            self._send(*hub.handle(request, body))

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: object, code: str | None) -> None:
            raw = payload if isinstance(payload, Raw) else Raw(json.dumps(payload).encode(),
                                                                {"Content-Type": "application/json"})
            self.send_response(status)
            for name, value in raw.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw.body)))
            if code:
                self.send_header("X-Error-Code", code)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw.body)

        do_GET = do_POST = do_PUT = do_HEAD = _serve

        def log_message(self, *args) -> None:  # quiet: the requests are recorded instead
            pass

    return Handler
