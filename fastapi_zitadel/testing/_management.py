"""The part of ZITADEL's user and session API v2 that revokes, for trying events by hand:
``POST /v2/users/{userId}/deactivate`` (``reactivate``, ``lock``, ``unlock``),
``DELETE /v2/users/{userId}`` and ``DELETE /v2/sessions/{sessionId}``, for an IAM owner's
token, answering ``{"details": {...}}`` as ZITADEL's gateway does. Each call is the stand-in's
Python call of the same name, so it writes (and sends) the same event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._actions import NOT_FOUND, ApiError
from ._directory import User
from ._events import rfc3339_nano

_USER_CHANGES = ("deactivate", "reactivate", "lock", "unlock")


@dataclass
class ManagementApi:
    """Handed the stand-in's own calls (not the stand-in: it builds this API)."""

    authorize: Callable[[Request], User]
    users: Mapping[str, User]
    change_user: Mapping[str, Callable[..., None]]  # by change: (user, *, editor=the caller)
    terminate_session: Callable[..., None]  # (session id, *, editor=the caller)
    clock: Callable[[], float]

    def routes(self) -> list[Route]:
        return [
            Route("/v2/users/{user_id}/{change}", self._call, methods=["POST"]),
            Route("/v2/users/{user_id}", self._call, methods=["DELETE"]),
            Route("/v2/sessions/{session_id}", self._call, methods=["DELETE"]),
        ]

    async def _call(self, request: Request) -> Response:
        params = request.path_params
        change = params.get("change", "remove")  # DELETE /v2/users/{id}: removes
        try:
            if request.method == "POST" and change not in _USER_CHANGES:
                raise ApiError(12, "Not Implemented")
            caller = self.authorize(request)
            if "session_id" in params:
                try:
                    self.terminate_session(params["session_id"], editor=caller)
                except ValueError:
                    raise ApiError(NOT_FOUND, "Errors.Session.NotExisting") from None
            else:
                user = self.users.get(params["user_id"])
                if user is None or user.removed:
                    raise ApiError(NOT_FOUND, "Errors.User.NotFound")
                self.change_user[change](user, editor=caller)
        except ApiError as error:
            return error.answer()
        return JSONResponse({"details": {"changeDate": rfc3339_nano(self.clock())}})
