"""Request ids, the structured access log and the request metrics, in one middleware.

Logs are JSON lines (python-json-logger) on stderr, or for development a coloured console
(`IMAGO_LOG_FORMAT=console`, the default of `imago serve`) or plain text. They carry the request id (taken from a sane
`X-Request-ID` header or made here, and sent back), the route *template* (`/images/{image_id}`, never the
query string, which may hold search words), the status, the duration and the client id: no keys, no file
names, no content. Run uvicorn with `--no-access-log`, whose lines include query strings.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
log = logging.getLogger("imago.api")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(log_format: str = "json") -> None:
    """Idempotent: one handler on the `imago` logger, JSON lines (production), plain text, or a readable
    coloured console for development (the latest call's format)."""
    logger = logging.getLogger("imago")
    handler = next((h for h in logger.handlers if getattr(h, "_imago", False)), None)
    wanted = RichHandler if log_format == "console" else logging.StreamHandler
    if handler is not None and type(handler) is not wanted:
        logger.removeHandler(handler)
        handler = None
    if handler is None:
        handler = (RichHandler(console=Console(stderr=True), show_path=False, markup=False,
                               log_time_format="[%X]") if log_format == "console" else logging.StreamHandler())
        handler._imago = True  # type: ignore[attr-defined]
        handler.addFilter(_RequestIdFilter())
        logger.addHandler(handler)
    if log_format == "console":  # RichHandler draws the time and a coloured level itself
        handler.setFormatter(logging.Formatter("%(name)s [%(request_id)s] %(message)s"))
    elif log_format == "json":
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger.setLevel(logging.INFO)
    logger.propagate = False


class RequestObserver:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware wraps every body chunk and runs the app in a task:
    measured, a sixth of an upload's CPU time)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status, answered = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if answered:  # a stream that broke half-way: nothing more can be said to the client
                raise
            await unexpected_error(exc, request_id)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics = scope["app"].state.metrics
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.latency.labels(method, route).observe(elapsed)
            client_id = (scope.get("state") or {}).get("client_id")  # set by authentication (request.state)
            log.info(f"{method} {route} {status} {elapsed * 1000:.0f} ms",
                     extra={"method": method, "route": route, "status": status,
                            "duration_ms": round(elapsed * 1000, 1), "client_id": client_id})
            request_id_var.reset(token)


def unexpected_error(exc: Exception, request_id: str) -> JSONResponse:
    """The answer to an exception no handler took, in the API's error shape: text with a NUL character
    (which Postgres refuses in any string) is the client's error, 422; anything else is our bug, 500, logged
    with its traceback and the request id the client can quote."""
    if _is_nul_refusal(exc):
        return JSONResponse({"error": {"code": "invalid_request", "message": "text with a NUL (0x00) character"}},
                            status_code=422)
    log.error("unexpected error", exc_info=exc)
    return JSONResponse({"error": {"code": "internal_error", "request_id": request_id,
                                   "message": f"an unexpected error; quote request id {request_id} to report it"}},
                        status_code=500)


def _is_nul_refusal(exc: BaseException | None) -> bool:
    while exc is not None:  # psycopg2's ValueError, wrapped by SQLAlchemy or not
        if isinstance(exc, ValueError) and "NUL" in str(exc):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


def install_request_middleware(app: FastAPI) -> None:
    app.add_middleware(RequestObserver)
