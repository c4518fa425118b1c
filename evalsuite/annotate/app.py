"""The annotation web app: one static page plus a JSON API over the project's store.

Model output is rendered to HTML on the server by markdown-it with raw HTML off (every tag in an
answer is shown as text, images become links, `javascript:` links are dropped); the page inserts
only that, and a strict Content-Security-Policy (scripts from this server only, no inline code,
no requests elsewhere) stops anything that slipped through from running. Bound to a non-loopback
address, every API call needs the project token; on loopback the Host header must be local, so a
web page elsewhere cannot reach the API through DNS rebinding.
"""

from __future__ import annotations

import hmac
import socket
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evalsuite.annotate.store import Conflict, Invalid, Store
from evalsuite.errors import UsageError

STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]


def markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).disable("image")

    def link_open(tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("target", "_blank")
        tokens[idx].attrSet("rel", "noopener noreferrer")
        return md.renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


_MD = markdown()


def render(text: str) -> str:
    """Markdown to safe HTML: raw HTML escaped, no images, links open elsewhere."""
    return _MD.render(text if isinstance(text, str) else str(text))


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


class SecurityHeaders:
    """CSP and friends on every response; the token check on every API call when a token is set."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token and scope["path"].startswith("/api/"):
            given = dict(scope["headers"]).get(b"x-annotate-token", b"").decode("latin-1")
            if not hmac.compare_digest(given, self.token):
                await _json({"error": "missing or wrong token: open the URL the server printed (it holds ?token=)"},
                            401)(scope, receive, send)
                return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def view(store: Store, item: dict[str, Any]) -> dict[str, Any]:
    """An item as the page shows it: rendered turns, answers in the shown order under letters, no model names."""
    answers = [item["answers"][i] for i in item["order"]]
    return {"id": item["id"], "mode": store.mode, "skipped_before": item["skipped_before"],
            "prompt": [render(t) for t in item["prompt"]],
            "answers": [{"slot": chr(65 + n), "turns": [render(t) for t in a["turns"]]} for n, a in enumerate(answers)]}


def create_app(store: Store, token: str | None = None, host: str = "127.0.0.1") -> Starlette:
    """The Starlette app for one store. `token` is required when `host` is not a loopback address."""
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host} makes the app reachable from other machines: pass --token SECRET "
                         "(annotators open the URL with ?token=SECRET)")

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise Invalid("the request body must be a JSON object") from None
        if not isinstance(data, dict):
            raise Invalid("the request body must be a JSON object")
        return data

    def item_id(data: dict[str, Any]) -> int:
        value = data.get("item")
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("'item' must be the id of the item shown (a whole number)")
        return value

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def project(request: Request) -> Response:
        p = store.project
        return _json({k: p.get(k) for k in ("name", "mode", "criteria", "labels", "n_items", "task", "id")})

    # SQLite calls block (a lock held by another process waits up to 30 s): they run in the thread pool,
    # so one slow write never stalls the other annotators' requests.
    async def next_item(request: Request) -> Response:
        annotator = request.query_params.get("annotator", "")

        def work() -> dict[str, Any]:
            item = store.next_item(annotator)
            return {"item": view(store, item) if item else None, "progress": store.progress(annotator.strip())}

        return _json(await run_in_threadpool(work))

    async def submit(request: Request) -> Response:
        data = await body(request)

        def work() -> dict[str, Any]:
            jid = store.submit(data.get("annotator", ""), item_id(data), data.get("verdict"), data.get("elapsed_ms"))
            return {"ok": True, "judgment": jid, "progress": store.progress(str(data["annotator"]).strip())}

        return _json(await run_in_threadpool(work))

    async def skip(request: Request) -> Response:
        data = await body(request)

        def work() -> dict[str, Any]:
            store.skip(data.get("annotator", ""), item_id(data))
            return {"ok": True, "progress": store.progress(str(data["annotator"]).strip())}

        return _json(await run_in_threadpool(work))

    async def undo(request: Request) -> Response:
        data = await body(request)

        def work() -> dict[str, Any]:
            item = store.undo(data.get("annotator", ""))
            return {"ok": True, "item": item, "progress": store.progress(str(data["annotator"]).strip())}

        return _json(await run_in_threadpool(work))

    async def progress(request: Request) -> Response:
        annotator = request.query_params.get("annotator")
        return _json(await run_in_threadpool(store.progress, annotator.strip() if annotator else None))

    async def export(request: Request) -> Response:
        from evalsuite.annotate.export import summarize

        def work() -> dict[str, Any]:
            return {"project": store.project, "summary": summarize(store),
                    "judgments": store.judgments(include_undone=True, kind=None)}

        return _json(await run_in_threadpool(work))

    async def error(request: Request, exc: Exception) -> Response:
        status = 409 if isinstance(exc, Conflict) else 400
        return _json({"error": str(exc)}, status)

    routes = [Route("/", index), Route("/api/project", project), Route("/api/next", next_item),
              Route("/api/submit", submit, methods=["POST"]), Route("/api/skip", skip, methods=["POST"]),
              Route("/api/undo", undo, methods=["POST"]), Route("/api/progress", progress),
              Route("/api/export", export), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    middleware = [Middleware(SecurityHeaders, token=token)]
    if is_loopback(host):
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"]))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={UsageError: error})


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is one clear line, not a server traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise UsageError(f"port {port} on {host} is in use (another annotate server?): pass --port N, "
                             "or --port 0 for any free port") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; pass another --host/--port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def server(app: Starlette, sock: socket.socket) -> Any:
    """A uvicorn server for `app` on an already bound socket (run it with `.run(sockets=[sock])`)."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                         lifespan="off"))
