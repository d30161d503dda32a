"""Errors are data: one exception per failure kind, mapped once to a status, a code and a message."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status_code = status_code or self.status_code


class NotAuthenticated(ApiError):
    status_code, code = 401, "not_authenticated"


class MissingScope(ApiError):
    status_code, code = 403, "missing_scope"


class NotFound(ApiError):
    status_code, code = 404, "not_found"


class InvalidUpload(ApiError):
    status_code, code = 422, "invalid_image"


UPLOAD_STATUS = {"empty": 400, "too_large": 413, "too_many_pixels": 413, "unsupported_type": 415, "corrupt": 422}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "X-API-Key"} if exc.status_code == 401 else None
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status_code,
                            headers=headers)
