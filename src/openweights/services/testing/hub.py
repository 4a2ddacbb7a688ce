"""A stand-in for the Hugging Face Hub at its own boundary: the endpoints a push with
``huggingface_hub`` uses (``HfApi.create_repo`` and ``upload_folder``), over HTTP at
``HF_ENDPOINT``, so a job's push is tested with the real client and no network.

- ``POST /api/validate-yaml`` (a README's metadata, checked before a commit): no warnings;
- ``POST /api/repos/create`` ``{"name", "organization", "visibility"}``: 200 with
  ``{"url"}``, 409 if it exists (``exist_ok`` takes that as fine);
- ``POST /api/models/{repo}/preupload/{rev}``: every file ``"regular"`` (the Hub's answer
  for files it stores in git; so no LFS/Xet transfer is needed);
- ``POST /api/models/{repo}/commit/{rev}``: the NDJSON commit (a header, then ``file``
  entries with base64 content), stored; ``{"commitUrl", "commitOid"}``.

Every call needs ``Authorization: Bearer <token>`` (401 otherwise, as the Hub answers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeHub", "HubRepo", "fake_hub"]

_PRE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/?]+)")


@dataclass
class HubRepo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


class FakeHub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.url = ""

    def handle(self, method: str, path: str, auth: str | None,
               body: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((method, path))
            if auth != f"Bearer {self.token}":
                return 401, {"error": "Invalid credentials in Authorization header"}
            route = path.split("?")[0]
            if method == "POST" and route == "/api/repos/create":
                return self._create(json.loads(body))
            if method == "POST" and route == "/api/validate-yaml":  # a model card's metadata
                return 200, {"warnings": []}
            m = _PRE.match(path)
            if method != "POST" or m is None:
                return 404, {"error": f"no route {method} {path}"}
            repo = self.repos.get(m["repo"])
            if repo is None:
                return 404, {"error": f"Repository {m['repo']} not found"}
            if m["op"] == "preupload":
                files = json.loads(body)["files"]
                return 200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                        "shouldIgnore": False, "oid": None} for f in files]}
            return self._commit(m["repo"], repo, body)

    def _create(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url":
                         f"{self.url}/{repo_id}"}
        self.repos[repo_id] = HubRepo(private=payload.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _commit(self, repo_id: str, repo: HubRepo, body: bytes) -> tuple[int, dict[str, Any]]:
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                value = item["value"]
                repo.files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] != "header":
                return 400, {"error": f"this stand-in takes regular files, not {item['key']}"}
        oid = hashlib.sha1(body).hexdigest()
        repo.commits.append(oid)
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(size) if size else b""
            status, payload = hub.handle(self.command, self.path,
                                         self.headers.get("Authorization"), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            return

    return Handler


@contextmanager
def fake_hub(token: str) -> Iterator[FakeHub]:
    """A :class:`FakeHub` served on a free loopback port (``hub.url``)."""
    hub = FakeHub(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="fake-hub")
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
