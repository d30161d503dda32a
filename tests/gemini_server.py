"""A local HTTP server that speaks Gemini's `generateContent` protocol, for the real google-genai client.

Each test scripts the answers (status code and JSON body) the server gives, in order; the last answer repeats.
The server keeps every request it received so tests can check what the client sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def text_answer(text: str, finish: str = "STOP") -> tuple[int, dict]:
    return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish,
                                 "index": 0}],
                 "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}}


def json_answer(payload: dict) -> tuple[int, dict]:
    return text_answer(json.dumps(payload))


def error_answer(code: int, status: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": f"simulated {status}", "status": status}}


def blocked_answer() -> tuple[int, dict]:
    return 200, {"promptFeedback": {"blockReason": "SAFETY"}, "candidates": []}


class GeminiProtocolServer:
    def __init__(self, answers: list[tuple[int, dict]] | None = None, responder=None):
        """`answers` are given in order (the last one repeats); `responder(body)` instead picks one per request."""
        self.answers = list(answers or [])
        self.responder = responder
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if server.responder is not None:
                    status, payload = server.responder(body)
                else:
                    index = min(len(server.requests) - 1, len(server.answers) - 1)
                    status, payload = server.answers[index] if server.answers else (500, {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> GeminiProtocolServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
