"""Serving the dashboard: `/` redirects to `/ui/`, `/ui/` is the page, `/ui/<file>` its
assets. Every file is read once, at start, from the package (gzipped too); answers carry an
ETag (a conditional request gets a 304), `Cache-Control: no-cache` (a browser keeps the
files and asks whether they changed, so an upgraded node is seen at once) and the security
headers: a Content-Security-Policy that allows scripts, styles and connections from this
origin only (no inline script or style, no framing), `nosniff`, and no Referer.

The files are public (they hold no data and no secret); everything the page shows comes
from the API, which wants a token."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

PREFIX = "/ui/"
INDEX = "index.html"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    media_type: str
    body: bytes
    gzipped: bytes
    etag: str  # strong, of the plain body; the gzipped body's is `<etag>-gz`


def load_assets(directory: Traversable | None = None) -> dict[str, Asset]:
    """Every file of `static/` with a known type, by name."""
    root = directory or resources.files(__package__).joinpath("static")
    assets: dict[str, Asset] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if not entry.is_file() or suffix not in MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:20]
        assets[entry.name] = Asset(
            MEDIA_TYPES[suffix], body, gzip.compress(body, 9, mtime=0), f'"{digest}"'
        )
    return assets


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags


def serve(asset: Asset, request: Request) -> Response:
    """The asset (gzipped when the client takes it), or 304 when its copy is current."""
    gz = "gzip" in request.headers.get("accept-encoding", "").lower()
    etag = asset.etag[:-1] + '-gz"' if gz else asset.etag
    headers = {
        **SECURITY_HEADERS,
        "ETag": etag,
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
    }
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if gz:
        headers["Content-Encoding"] = "gzip"
    body = b"" if request.method == "HEAD" else (asset.gzipped if gz else asset.body)
    response = Response(body, media_type=asset.media_type, headers=headers)
    if request.method == "HEAD":
        response.headers["Content-Length"] = str(len(asset.gzipped if gz else asset.body))
    return response


def _redirect(to: str) -> Response:
    return RedirectResponse(to, status_code=307, headers=SECURITY_HEADERS)


def dashboard_router(assets: dict[str, Asset] | None = None) -> APIRouter:
    files = assets if assets is not None else load_assets()
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def root() -> Response:
        return _redirect(PREFIX)

    @router.api_route("/ui", methods=["GET", "HEAD"])
    async def ui() -> Response:
        return _redirect(PREFIX)

    @router.api_route(PREFIX, methods=["GET", "HEAD"])
    async def index(request: Request) -> Response:
        return serve(files[INDEX], request)

    @router.api_route(PREFIX + "{name}", methods=["GET", "HEAD"])
    async def asset(name: str, request: Request) -> Response:
        found = files.get(name)
        if found is None:
            return Response("not found\n", 404, media_type="text/plain", headers=SECURITY_HEADERS)
        return serve(found, request)

    return router
