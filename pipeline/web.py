"""The worker's HTTP views: intentwatch's public JWKS and a small status page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

__all__ = ["JWKS_PATH", "STATUS_PATH", "add_views"]

JWKS_PATH = "/.well-known/jwks.json"
STATUS_PATH = "/status"


def add_views(
    app: faust.App,
    *,
    jwks: Callable[[], dict[str, Any]],
    status: Callable[[], dict[str, Any]],
) -> None:
    """Serve ``jwks()`` at :data:`JWKS_PATH` and ``status()`` at :data:`STATUS_PATH`."""

    @app.page(JWKS_PATH, name="jwks")
    async def jwks_view(view: View, request: Request) -> Response:
        return view.json(
            jwks(), content_type="application/jwk-set+json",
            headers={"Cache-Control": "max-age=60"},
        )

    @app.page(STATUS_PATH, name="status")
    async def status_view(view: View, request: Request) -> Response:
        return view.json(status())
