"""The worker's HTTP views: intentwatch's public JWKS, a status page, metrics, health and
readiness.

``/health`` answers 200 while the process serves (its body says whether Kafka is
reachable); ``/ready`` answers 200 only while the worker judges (its partitions are
recovered and Kafka is reachable), else 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.web import Request, Response, View

__all__ = ["HEALTH_PATH", "JWKS_PATH", "METRICS_PATH", "READY_PATH", "STATUS_PATH", "add_views"]

JWKS_PATH = "/.well-known/jwks.json"
STATUS_PATH = "/status"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/health"
READY_PATH = "/ready"


def add_views(
    app: faust.App,
    *,
    jwks: Callable[[], dict[str, Any]],
    status: Callable[[], dict[str, Any]],
    metrics: Callable[[str | None], Awaitable[tuple[bytes, str]]],
    health: Callable[[], dict[str, Any]],
) -> None:
    """Serve ``jwks()`` at :data:`JWKS_PATH`, ``status()`` at :data:`STATUS_PATH`,
    ``metrics(accept)`` (body and content type, for the request's ``Accept`` header) at
    :data:`METRICS_PATH`, and ``health()`` (with ``ready``) at :data:`HEALTH_PATH` and
    :data:`READY_PATH`."""

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

    @app.page(HEALTH_PATH, name="health")
    async def health_view(view: View, request: Request) -> Response:
        return view.json(health())

    @app.page(READY_PATH, name="ready")
    async def ready_view(view: View, request: Request) -> Response:
        body = health()
        return view.json(body, status=200 if body["ready"] else 503)
