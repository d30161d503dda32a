"""Errors are data: one exception per failure kind, mapped once to a status, a code and a message.

Every answer that is not a success has the same shape, `{"error": {"code", "message", …}}`, and every status
a route can answer is declared in the OpenAPI document (`ERRORS`, `responses()`): a client can rely on both.
An outage of a dependency (the catalog database, the blob store) answers 503 with a reason and `Retry-After`;
the service recovers by itself when the dependency is back.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from imago_pipeline.core.stores.blobs import StorageUnavailable

log = logging.getLogger("imago.api")
RETRY_AFTER_S = 5


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 headers: dict[str, str] | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status_code = status_code or self.status_code
        self.headers = headers
        self.extra = extra  # more machine-readable fields of the error body


class NotAuthenticated(ApiError):
    status_code, code = 401, "not_authenticated"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "X-API-Key"})


class MissingScope(ApiError):
    status_code, code = 403, "missing_scope"


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class Conflict(ApiError):
    status_code, code = 409, "conflict"


class InvalidUpload(ApiError):
    status_code, code = 422, "invalid_image"


class RateLimited(ApiError):
    status_code, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)}, retry_after_s=retry_after_s)


class Unavailable(ApiError):
    status_code = 503

    def __init__(self, message: str, *, code: str):
        super().__init__(message, code=code, headers={"Retry-After": str(RETRY_AFTER_S)})


UPLOAD_STATUS = {"empty": 400, "too_large": 413, "too_many_pixels": 413, "unsupported_type": 415, "corrupt": 422,
                 "quota_exceeded": 413}


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer: a machine-readable code, a human message, sometimes more fields."""

    error: ErrorBody


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


ERRORS: dict[int, dict[str, Any]] = {
    400: _error("Bad request (an empty upload)"),
    401: _error("No key, or an unknown or revoked key (`not_authenticated`)"),
    403: _error("The key lacks the route's scope (`missing_scope`), or a signed link is tampered or expired"),
    404: _error("No such image or client for this key (another client's id is not found either)"),
    409: _error("Conflicts with what exists (a client name taken, nothing to give feedback on)"),
    413: _error("Too many bytes or pixels, or over the storage quota"),
    415: _error("Not an image type we accept"),
    422: _error("The request is not valid: a parameter out of range, a malformed body, a corrupt image"),
    429: _error("Rate limit of the client's plan reached (`rate_limited`, with `Retry-After`)"),
    502: _error("The fetched page or the AI provider failed"),
    503: _error("A dependency is down (`catalog_unavailable`, `storage_unavailable`, `rate_limit_unavailable`, "
                "`model_unavailable`), with `Retry-After`"),
    504: _error("The fetched page took too long"),
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route: these error statuses, each with the error shape."""
    return {status: ERRORS[status] for status in statuses}


# What every route behind an API key can answer, besides its own errors.
AUTHENTICATED = (401, 403, 422, 429, 503)


def _body(code: str, message: str, **extra) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, **exc.extra), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # The input is echoed by FastAPI's default body; keep only where and why (no uploaded content back).
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse(_body("invalid_request", "the request is not valid", details=details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own refusals: an unknown route, a wrong method, or a body it cannot parse (bytes
        # that are not JSON, a multipart part whose header is too long): the last is an invalid request.
        if exc.status_code == 400:
            return JSONResponse(_body("invalid_request", f"the request body cannot be read: {exc.detail}"),
                                status_code=422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    def _unavailable(code: str, message: str) -> JSONResponse:
        return JSONResponse(_body(code, message), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _catalog_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("catalog unavailable: %s", type(exc).__name__)
        return _unavailable("catalog_unavailable", "the catalog database cannot be reached; retry shortly")

    @app.exception_handler(DBAPIError)
    async def _catalog_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:  # the connection broke mid-request: the database went away
            return await _catalog_down(request, exc)
        raise exc

    @app.exception_handler(StorageUnavailable)
    async def _storage_down(_request: Request, exc: StorageUnavailable) -> JSONResponse:
        log.warning("blob store unavailable: %s", exc)
        return _unavailable("storage_unavailable", "the file store cannot be reached or written; retry shortly")
