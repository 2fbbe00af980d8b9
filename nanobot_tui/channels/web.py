"""`nanobot web`: the app itself in a browser, served by textual-serve.

Each browser that connects gets its own `python -m nanobot_tui` process, run under
Textual's web driver; textual-serve relays its screen to the page over a websocket.

textual-serve has no authentication, so two things are put in front of it rather than
forking it:

- a token check (aiohttp middleware) on every request: the token comes in the URL
  (`?token=...`) or, for the page's own requests after it (scripts, the websocket), in the
  HttpOnly cookie that a request with the right token in the URL is given. Anything else
  gets 403. The websocket must also come from a page of the same origin.
- read-only by default: the browser's keys and mouse reach textual-serve as "stdin"
  messages on the websocket (`Server._process_messages`); `WebView` handles those messages
  itself and drops "stdin" unless `control` is set. Resizes still pass, so the view fits
  the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nanobot_tui.errors import NanobotError, UsageError

if TYPE_CHECKING:
    from aiohttp import web
    from textual_serve.app_service import AppService

TOKEN_PARAM = "token"
TOKEN_COOKIE = "nanobot_web_token"
# The command each browser's app process runs: this Python, this package.
APP_COMMAND = shlex.join([sys.executable, "-m", "nanobot_tui"])
INSTALL_HINT = "nanobot web needs textual-serve: pip install 'nanobot-tui[gateway]'"


class WebError(NanobotError):
    """The web view could not listen where asked."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) only ever means this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def url_host(host: str) -> str:
    """`host` as it stands in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class WebAddress:
    host: str
    port: int
    token: str
    control: bool

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}/?{TOKEN_PARAM}={self.token}"


def _token_matches(given: str | None, token: str) -> bool:
    # Bytes: compare_digest refuses a str with non-ASCII characters, which a URL may hold.
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def _same_origin(request: web.Request) -> bool:
    """A websocket opened by a page of this server, not by some other site the browser
    has open (a browser always sends Origin on a websocket; other clients may not)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1] == request.host


def token_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """403 for every request without the right token, in the URL or in the cookie."""
    from aiohttp import web

    @web.middleware
    async def check_token(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        in_url = _token_matches(request.query.get(TOKEN_PARAM), token)
        if not (in_url or _token_matches(request.cookies.get(TOKEN_COOKIE), token)):
            raise web.HTTPForbidden(text="nanobot web: wrong or missing token\n")
        if request.path == "/ws" and not _same_origin(request):
            raise web.HTTPForbidden(text="nanobot web: websocket from another origin\n")
        response = await handler(request)
        if in_url and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return check_token


def _server_class() -> type[Any]:
    """`WebView`, built on first use: textual-serve is an optional extra."""
    try:
        import aiohttp_jinja2
        from aiohttp import WSCloseCode, WSMsgType
        from textual_serve.server import Server
    except ImportError:
        raise UsageError(INSTALL_HINT) from None

    class WebView(Server):
        """textual-serve's server with the token check, read-only unless `control`, and
        the page's websocket URL taken from the request's own Host (the address the
        browser reached, which `0.0.0.0` is not)."""

        def __init__(self, token: str, control: bool) -> None:
            super().__init__(APP_COMMAND, title="nanobot")
            self.token = token
            self.control = control
            self.websockets: set[web.WebSocketResponse] = set()

        async def make_app(self) -> web.Application:
            app: web.Application = await self._make_app()
            app.middlewares.append(token_middleware(self.token))
            return app

        async def on_startup(self, app: web.Application) -> None:
            """Nothing: textual-serve prints a banner here; `serve` prints the URL."""

        async def on_shutdown(self, app: web.Application) -> None:
            """Close each browser's websocket, which ends its app process; aiohttp would
            otherwise wait on them (up to its shutdown timeout) before cancelling them."""
            for websocket in list(self.websockets):
                await websocket.close(code=WSCloseCode.GOING_AWAY, message=b"server stopped")

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            context = {
                "font_size": 16,
                "app_websocket_url": f"ws://{request.host}/ws",
                "config": {"static": {"url": "/static/"}},
                "application": {"name": self.title},
            }
            return aiohttp_jinja2.render_template("app_index.html", request, context)

        async def _process_messages(
            self, websocket: web.WebSocketResponse, app_service: AppService
        ) -> None:
            """textual-serve's own loop, with the browser's input ("stdin": keys and
            mouse alike) passed on only under `control`."""
            self.websockets.add(websocket)
            try:
                await self._relay(websocket, app_service)
            finally:
                self.websockets.discard(websocket)

        async def _relay(self, websocket: web.WebSocketResponse, app_service: AppService) -> None:
            async for message in websocket:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    envelope = message.json()
                except ValueError:
                    continue
                if not isinstance(envelope, list) or not envelope:
                    continue
                kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
                if kind == "stdin" and isinstance(data, str):
                    if self.control:
                        await app_service.send_bytes(data.encode("utf-8"))
                elif kind == "resize" and isinstance(data, dict):
                    width, height = data.get("width"), data.get("height")
                    if isinstance(width, int) and isinstance(height, int):
                        await app_service.set_terminal_size(width, height)
                elif kind == "ping":
                    await websocket.send_json(["pong", data])
                elif kind == "blur":
                    await app_service.blur()
                elif kind == "focus":
                    await app_service.focus()

    return WebView


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port` (0: any free port), or a one-line WebError."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise WebError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise WebError(f"web: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def serve(
    host: str, port: int, *, control: bool, on_ready: Callable[[WebAddress], None]
) -> None:
    """Serve the app on `host`:`port` until SIGINT or SIGTERM; `on_ready` is given the
    address (with its fresh token) once the server listens."""
    from aiohttp import web

    view = _server_class()(secrets.token_urlsafe(24), control)
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    runner = web.AppRunner(await view.make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await web.SockSite(runner, sock).start()
        on_ready(WebAddress(host, bound_port, view.token, control))
        await stop.wait()
    finally:
        # Closes each websocket, and with it that browser's app process.
        await runner.cleanup()
        sock.close()
