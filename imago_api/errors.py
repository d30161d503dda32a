"""Errors are data: one exception per failure kind, mapped once to a status, a code and a message."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


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


UPLOAD_STATUS = {"empty": 400, "too_large": 413, "too_many_pixels": 413, "unsupported_type": 415, "corrupt": 422,
                 "quota_exceeded": 413}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message, **exc.extra}},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # The input is echoed by FastAPI's default body; keep only where and why (no uploaded content back).
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"error": {"code": "invalid_request", "message": "the request is not valid",
                                       "details": details}}, status_code=422)
