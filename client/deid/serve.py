"""``trivault deid serve``: a local web page where the owner chooses the privacy level by looking.

Standard-library HTTP server bound to 127.0.0.1 only. The page (web/index.html) posts JSON to:
``POST /api/images`` {name, data (base64 file bytes)} -> {id, width, height, regions};
``POST /api/release`` {id, eps, mechanism, regions} -> {image (JPEG data URL), metrics};
``POST /api/approve`` {} -> {written: [paths]} (the latest release of every image, PNG + JSON).
API calls must carry the per-run token the page embeds (header ``X-Trivault-Token``) and a
Host of 127.0.0.1/localhost, so other web pages open in the owner's browser cannot drive it
(no CORS headers are sent; a custom header forces a preflight they cannot pass).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..preprocess import ImageInputError
from .workbench import Workbench

PAGE = Path(__file__).resolve().parent / "web" / "index.html"
MAX_BODY = 80 * 1024 * 1024  # base64 of the largest accepted file plus JSON


class DeidServer(ThreadingHTTPServer):
    """The HTTP server, holding the workbench and the page's token."""

    daemon_threads = True

    def __init__(self, workbench: Workbench, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.workbench = workbench
        self.token = secrets.token_urlsafe(24)

    @property
    def url(self) -> str:
        """Address of the page."""
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    """GET / serves the page; POST /api/* calls the workbench."""

    server: DeidServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the console shows only what the command prints."""

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in ("127.0.0.1", "localhost")

    def do_GET(self) -> None:
        """The page, with this run's token filled in."""
        if not self._host_ok():
            return self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host"})
        if self.path not in ("/", "/index.html"):
            return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
        page = PAGE.read_text().replace("{{TOKEN}}", self.server.token)
        self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        """Dispatch an API call; bad input gets a 400 with the reason."""
        if not self._host_ok() or not secrets.compare_digest(self.headers.get("X-Trivault-Token", ""),
                                                             self.server.token):
            return self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong token"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "file too large"})
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            self._json(HTTPStatus.OK, self._call(self.path, body))
        except KeyError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except (ValueError, TypeError, ImageInputError, binascii.Error) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    def _call(self, path: str, body: dict) -> dict:
        bench = self.server.workbench
        if path == "/api/images":
            data = str(body["data"]).split(",", 1)[-1]  # a data URL or bare base64
            return bench.add(str(body.get("name", "image")), base64.b64decode(data, validate=True))
        if path == "/api/release":
            return bench.release(str(body["id"]), float(body["eps"]), str(body["mechanism"]),
                                 list(body.get("regions", [])))
        if path == "/api/approve":
            return {"written": bench.approve(), "out_dir": str(bench.out_dir)}
        raise KeyError(f"no API {path}")


def start(out_dir: Path, port: int = 0, warm: bool = True) -> tuple[DeidServer, threading.Thread]:
    """Start the server on 127.0.0.1 in a background thread (after loading the models if ``warm``);
    returns it and the thread."""
    server = DeidServer(Workbench(out_dir), port)
    if warm:
        server.workbench.warm()
    thread = threading.Thread(target=server.serve_forever, name="deid-serve", daemon=True)
    thread.start()
    return server, thread
