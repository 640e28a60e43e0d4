"""A local HTTP server (127.0.0.1, port chosen by the OS) serving canned responses, counting requests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    drip_s: float = 0.0  # > 0: send the response one byte at a time, this many seconds apart
    drip_headers: bool = False  # drip the status line and headers too, not only the body


class ImageServer:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        self.image = b""  # the bytes a fixture's routes serve as the good image, set by that fixture
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = server.routes.get(self.path, Route(404, b"not found", {"Content-Type": "text/plain"}))
                time.sleep(route.delay_s)
                head = [f"HTTP/1.1 {route.status} X"] + [f"{k}: {v}" for k, v in route.headers.items()]
                if route.send_length and "Content-Length" not in route.headers:
                    head.append(f"Content-Length: {len(route.body)}")
                head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode()
                try:
                    if route.drip_s and route.drip_headers:
                        self._drip(head_bytes + route.body, route.drip_s)
                    elif route.drip_s:
                        self.wfile.write(head_bytes)
                        self._drip(route.body, route.drip_s)
                    else:
                        self.wfile.write(head_bytes + route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def _drip(self, data: bytes, interval: float) -> None:
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(interval)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
