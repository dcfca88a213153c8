"""The worker's HTTP views: intentwatch's public JWKS, a small status page, and metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.web import Request, Response, View

__all__ = ["JWKS_PATH", "METRICS_PATH", "STATUS_PATH", "add_views"]

JWKS_PATH = "/.well-known/jwks.json"
STATUS_PATH = "/status"
METRICS_PATH = "/metrics"


def add_views(
    app: faust.App,
    *,
    jwks: Callable[[], dict[str, Any]],
    status: Callable[[], dict[str, Any]],
    metrics: Callable[[str | None], Awaitable[tuple[bytes, str]]],
) -> None:
    """Serve ``jwks()`` at :data:`JWKS_PATH`, ``status()`` at :data:`STATUS_PATH` and
    ``metrics(accept)`` (body and content type, for the request's ``Accept`` header) at
    :data:`METRICS_PATH`."""

    @app.page(JWKS_PATH, name="jwks")
    async def jwks_view(view: View, request: Request) -> Response:
        return view.json(
            jwks(), content_type="application/jwk-set+json",
            headers={"Cache-Control": "max-age=60"},
        )

    @app.page(STATUS_PATH, name="status")
    async def status_view(view: View, request: Request) -> Response:
        return view.json(status())

    @app.page(METRICS_PATH, name="metrics")
    async def metrics_view(view: View, request: Request) -> Response:
        body, content_type = await metrics(request.headers.get("Accept"))
        return view.bytes(body, headers={"Content-Type": content_type})
