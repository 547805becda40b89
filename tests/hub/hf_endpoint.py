"""A local Hugging Face Hub stand-in on 127.0.0.1: enough of ``/<repo_id>/resolve/<revision>/<file>`` for
``huggingface_hub.hf_hub_download``.

What ``hf_hub_download`` (huggingface_hub 1.x/2.x, ``file_download.py``) needs from the server:

- ``HEAD`` answering 200 with ``X-Repo-Commit`` (the 40-hex commit; without it the client refuses the endpoint),
  ``ETag`` (the blob name in the cache; for LFS files the Hub sends the sha256, here always the sha256) and
  ``Content-Length`` (the expected size, checked after the ``GET``). ``X-Linked-Etag``/``X-Linked-Size``/
  ``Location`` are only sent by the real Hub for LFS redirects to a CDN and are optional;
- ``GET`` with the bytes (a ``Range`` header is only sent to resume and a 200 answer is accepted);
- 404 with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`` so the client raises the right error.

``snapshot_download`` would also need ``/api/models/<repo_id>/revision/<rev>`` (the file list); emzoo never calls it
because the manifest lists every file, so this server does not implement it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class FakeHub:
    """Threaded HTTP server holding repos in memory; counts every request it receives.

    Examples
    --------
    >>> hub = FakeHub().start()  # doctest: +SKIP
    >>> commit = hub.add_repo("emzoo/x", {"config.json": b"{}"})  # doctest: +SKIP
    """

    def __init__(self, *, delay: float = 0.0) -> None:
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> file -> bytes
        self.branches: dict[str, str] = {}  # repo -> commit "main" points at
        self.requests: list[tuple[str, str]] = []
        self.delay = delay
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- content
    def add_repo(self, repo_id: str, files: dict[str, bytes], *, commit: str | None = None) -> str:
        """Store a commit of ``repo_id`` and point ``main`` at it; return the 40-hex commit."""
        if commit is None:
            digest = hashlib.sha1(repo_id.encode())
            for name in sorted(files):
                digest.update(name.encode() + hashlib.sha256(files[name]).digest())
            commit = digest.hexdigest()
        self.repos.setdefault(repo_id, {})[commit] = dict(files)
        self.branches[repo_id] = commit
        return commit

    def count(self, method: str | None = None) -> int:
        """Requests received so far (of one method, or all)."""
        with self._lock:
            return sum(1 for m, _ in self.requests if method is None or m == method)

    # ---- server
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def _answer(self, body: bool) -> None:
                with hub._lock:
                    hub.requests.append((self.command, self.path))
                match = _RESOLVE.match(unquote(self.path.split("?")[0]))
                if not match:
                    return self._error(404, "RepoNotFound")
                repo, rev, name = match["repo"], match["rev"], match["file"]
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound")
                commit = hub.branches[repo] if rev == "main" else rev
                if commit not in hub.repos[repo]:
                    return self._error(404, "RevisionNotFound")
                files = hub.repos[repo][commit]
                if name not in files:
                    return self._error(404, "EntryNotFound", commit=commit)
                data = files[name]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", commit)
                self.end_headers()
                if body:
                    # Send in pieces with a pause so concurrent downloads really overlap in the tests.
                    step = max(1, len(data) // 4)
                    for start in range(0, len(data), step):
                        if hub.delay:
                            time.sleep(hub.delay / 4)
                        self.wfile.write(data[start:start + step])

            def _error(self, code: int, error_code: str, commit: str | None = None) -> None:
                payload = f'{{"error": "{error_code}"}}'.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Error-Code", error_code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
