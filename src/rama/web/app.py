"""The dashboard server: `create_app(store, model, sae)` is a FastAPI app whose pages read one feature
store (and, given a model and an SAE, run text and steering through them).

Safety: the store is opened and checked before the app exists (a damaged, foreign or mismatched store is
a `RamaError` at start-up); every value reaches SQL as a parameter and HTML through autoescaping; files
are served only from the package's static folder (Starlette's `StaticFiles` resolves each path and
refuses what lies outside it); user text has length limits (a 400 that says so); a POST from another
site's page (an `Origin` that is not this server) is refused, so a web page cannot relabel features.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from rama.errors import ConfigError, InputError, RamaError
from rama.features.store import SORTABLE, FeatureStore
from rama.hooks.model import HookedModel
from rama.monitor import LatentWatcher, Monitor
from rama.sae.base import SAE
from rama.web import render
from rama.web.live import MAX_EDITS, MAX_PROMPT_CHARS, MAX_TEXT_CHARS, Edit, LiveModel, MonitorStream

STATIC = Path(__file__).parent / "static"
MAX_QUERY_CHARS = 200
MAX_LABEL_CHARS = 200
MAX_FORM_BYTES = 16_384


class PageError(HTTPException):
    """An error page with a title and a one-line message for the user."""


class Dashboard:
    """The state behind every request: the open store (one connection, used under a lock), the
    templates, the latents' medians, and the model and SAE when given."""

    def __init__(
        self, store_path: str | Path, model: HookedModel | None, sae: SAE | None, page_size: int
    ) -> None:
        if page_size < 1:
            raise ConfigError(f"page_size must be at least 1, not {page_size}")
        self.page_size = page_size
        self.path = Path(store_path)
        writable = (
            self.path.is_file() and self.path.stat().st_mode & 0o200 != 0 and os.access(self.path, os.W_OK)
        )
        self.store = FeatureStore(self.path, sae=sae, writable=writable)  # checks the file and the SAE
        self.writable = writable
        self.lock = threading.Lock()
        self.env = render.environment()
        self.links = render.Links()
        self.live = LiveModel(model, sae) if model is not None and sae is not None else None
        self.medians = {kind: render.medians(self.store, kind) for kind in render.ROUTE_OF}
        self.latent_max = render.latent_maxima(self.store)  # [d_sae], ranks /text's latents
        self.missing = (
            None
            if self.live
            else "this page runs the model and the SAE: start the dashboard with "
            "`rama serve DB --sae SAE_DIR` (and `--model M` if the store's model is not the one to use)"
        )

    @contextmanager
    def reading(self) -> Iterator[FeatureStore]:
        with self.lock:
            yield self.store

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = render.render_page(self.env, template, self.links, self.store.meta, **values)
        return HTMLResponse(html, status_code=status)

    def label(self, id: int) -> str:
        return render.label_of(self.store, id)


LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def create_app(
    store_path: str | Path,
    model: HookedModel | None = None,
    sae: SAE | None = None,
    page_size: int = 100,
    hosts: Sequence[str] | None = LOCAL_NAMES,
    monitor: Monitor | None = None,
) -> FastAPI:
    """The dashboard for the feature store at `store_path`; `model` and `sae` enable /text and /steer,
    `monitor` (probes and latents on a model) /monitor; the index shows `page_size` units a page.
    Requests must name one of `hosts` in their Host header (None: any), so a web page cannot reach a
    local dashboard through a DNS name rebound to 127.0.0.1."""
    board = Dashboard(store_path, model, sae, page_size)
    app = FastAPI(title="rama features", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dashboard = board
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_error_handlers(app, board)
    add_unit_routes(app, board)
    add_search_routes(app, board)
    add_live_routes(app, board)
    add_monitor_routes(app, board, monitor)
    if hosts is not None:
        add_host_check(app, set(hosts))
    return app


def add_host_check(app: FastAPI, hosts: set[str]) -> None:
    @app.middleware("http")
    async def check_host(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        name = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        if name not in hosts:
            message = f"this dashboard answers to {', '.join(sorted(hosts))}, not {name or 'no host'!r}"
            return PlainTextResponse(message, status_code=400)
        return await call_next(request)


def add_error_handlers(app: FastAPI, board: Dashboard) -> None:
    @app.exception_handler(HTTPException)
    def http_error(request: Request, error: HTTPException) -> Response:
        title = "Not found" if error.status_code == 404 else "Cannot do that"
        message = (
            error.detail
            if isinstance(error, PageError) or error.status_code != 404
            else f"there is no page at {request.url.path}"
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=error.status_code)
        return board.page("error.html", error.status_code, title=title, message=message)

    @app.exception_handler(RequestValidationError)
    def bad_parameter(request: Request, error: RequestValidationError) -> Response:
        names = ", ".join(str(e["loc"][-1]) for e in error.errors())
        return http_error(request, PageError(400, f"not a valid value for: {names}"))

    @app.exception_handler(RamaError)
    def user_error(request: Request, error: RamaError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(error)}, status_code=400)
        return board.page("error.html", 400, title="Cannot do that", message=str(error))


def parse_id(text: str, what: str) -> int:
    """A unit id from a path; anything else is a 404, as an unknown id is."""
    if not text.isdecimal() or len(text) > 12:
        raise PageError(404, f"{text[:40]!r} is not a {what} id (ids are whole numbers)")
    return int(text)


def unit_or_404(board: Dashboard, route: str, text: str) -> dict[str, Any]:
    kind = render.KINDS[route]
    id = parse_id(text, route)
    with board.reading() as store:
        page = render.unit_page(store, kind, id)
        count = store.count(kind) if page is None else 0  # counted only for the 404's message
    if page is None:
        raise PageError(404, f"there is no {route} {id}: this store has {route}s 0 … {count - 1}")
    return page


def add_unit_routes(app: FastAPI, board: Dashboard) -> None:
    @app.get("/", response_class=HTMLResponse)
    def index(
        kind: str = "latent", sort: str = "id", order: str = "asc", label: str = "", page: int = 1
    ) -> HTMLResponse:
        if kind not in render.ROUTE_OF or sort not in SORTABLE or order not in ("asc", "desc") or page < 1:
            raise PageError(
                400, f"sort by one of {', '.join(SORTABLE)}, order asc or desc, kind latent or neuron"
            )
        check_query("label filter", label)
        size = board.page_size
        with board.reading() as store:
            total = store.count(kind, label)
            pages = max(1, -(-total // size))
            if page > pages:
                raise PageError(404, f"there is no page {page}: the list has {pages} page(s)")
            rows = store.units_page(kind, sort, order == "desc", (page - 1) * size, size, label)
        return board.page("index.html", rows=rows, total=total, kind=kind, sort=sort, order=order,
                          label=label, page=page, pages=pages)  # fmt: skip

    @app.get("/feature/{id}", response_class=HTMLResponse)
    def feature(id: str) -> HTMLResponse:
        return board.page("unit.html", page=unit_or_404(board, "feature", id), writable=board.writable)

    @app.get("/neuron/{id}", response_class=HTMLResponse)
    def neuron(id: str) -> HTMLResponse:
        page = unit_or_404(board, "neuron", id)
        return board.page("unit.html", page=page, medians=board.medians, writable=False)

    @app.get("/api/{route}/{id}")
    def api(route: str, id: str) -> dict[str, Any]:
        if route not in render.KINDS:
            raise PageError(404, f"no API for {route!r}; try /api/feature/ID or /api/neuron/ID")
        return render.api_unit(unit_or_404(board, route, id))

    @app.post("/feature/{id}/label")
    async def save_label(id: str, request: Request) -> Response:
        form = await read_form(request)
        latent = parse_id(id, "feature")
        text = form.get("label", "").strip()
        check_query("label", text, MAX_LABEL_CHARS)
        if not board.writable:
            raise PageError(403, f"{str(board.path)!r} is read-only, so labels cannot be saved")
        with board.reading() as store:
            if store.unit(latent) is None:
                raise PageError(404, f"there is no feature {latent}")
            try:
                store.set_label(latent, text)
            except sqlite3.OperationalError as error:  # e.g. a folder where SQLite cannot write its journal
                raise PageError(
                    403, f"the label could not be saved in {str(board.path)!r}: {error}"
                ) from None
        return RedirectResponse(f"/feature/{latent}", status_code=303)


def check_query(what: str, text: str, limit: int = MAX_QUERY_CHARS) -> None:
    if len(text) > limit:
        raise PageError(400, f"the {what} is {len(text):,} characters long; the limit is {limit:,}")


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form body (at most MAX_FORM_BYTES), refused when it comes from another site's page."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise PageError(403, f"a form from {origin} may not change this dashboard; use the page itself")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, f"the form is over {MAX_FORM_BYTES:,} bytes; shorten the text")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InputError("the form is not UTF-8 text") from None
    return {name: values[-1] for name, values in fields.items()}


def search_results(store: FeatureStore, query: str) -> dict[str, Any]:
    """Latents found by id, by label text and by promoted token (as typed and with a leading space)."""
    text = query.strip()
    by_id = [int(text)] if text.isdecimal() and len(text) < 12 and store.unit(int(text)) else []
    by_label = store.by_label(text) if text else []
    seen: set[int] = set()
    by_token = []
    for token in dict.fromkeys((query, text, " " + text)):
        for row in store.by_promoted_token(token) if token.strip() else []:
            if row["unit"] not in seen:
                seen.add(row["unit"])
                by_token.append({**row, "token": token})
    found = {*by_id, *by_label, *seen}
    units = {id: store.unit(id) for id in found}
    numeric = text.isdecimal()
    return {"numeric": numeric, "by_id": by_id, "by_label": by_label, "by_token": by_token, "units": units}


def add_search_routes(app: FastAPI, board: Dashboard) -> None:
    @app.get("/search", response_class=HTMLResponse)
    def search(q: str = "") -> HTMLResponse:
        check_query("search", q)
        with board.reading() as store:
            results = search_results(store, q) if q.strip() else None
        return board.page("search.html", q=q, results=results)


def add_live_routes(app: FastAPI, board: Dashboard) -> None:
    @app.get("/text", response_class=HTMLResponse)
    def text(text: str = "") -> HTMLResponse:
        check_query("text", text, MAX_TEXT_CHARS)
        if board.live is None or not text:
            return board.page("text.html", text=text, result=None, missing=board.missing, labels={})
        result = board.live.text_activations(text, scale=board.latent_max)
        with board.reading():
            labels = {row["id"]: board.label(row["id"]) for row in result["latents"]}
            maxima = {
                row["id"]: (board.store.unit(row["id"]) or {}).get("max", 0.0) for row in result["latents"]
            }
        return board.page("text.html", text=text, result=result, missing=None, labels=labels, maxima=maxima)

    @app.get("/steer", response_class=HTMLResponse)
    def steer_form() -> HTMLResponse:
        return board.page("steer.html", form={}, result=None, missing=board.missing)

    @app.post("/steer", response_class=HTMLResponse)
    async def steer(request: Request) -> HTMLResponse:
        form = await read_form(request)
        if board.live is None:
            return board.page("steer.html", form=form, result=None, missing=board.missing)
        edits, new_tokens = steer_edits(form)
        live = board.live
        result = await run_in_threadpool(live.steer, form.get("prompt", ""), edits, new_tokens)
        return board.page("steer.html", form=form, result=result, missing=None)


def steer_edits(form: dict[str, str]) -> tuple[list[Edit], int]:
    """(edits, new tokens) from the steering form: rows latent_i / value_i, blank rows skipped."""
    edits = []
    try:
        for row in range(MAX_EDITS):
            latent, value = form.get(f"latent_{row}", "").strip(), form.get(f"value_{row}", "").strip()
            if latent:
                edits.append(Edit(int(latent), float(value or "0")))
        new_tokens = int(form.get("new_tokens", "24") or "24")
    except ValueError:
        raise InputError(
            "latents and new tokens must be whole numbers, values numbers (e.g. 12 and 8.5)"
        ) from None
    return edits, new_tokens


MONITOR_MISSING = (
    "this page runs probes on the model while it generates: start the dashboard with "
    "`rama serve DB --probe PROBE_DIR` (repeatable; `--model M` if the store's model is not the probes')"
)


def add_monitor_routes(app: FastAPI, board: Dashboard, monitor: Monitor | None) -> None:
    """/monitor: a prompt's generation with every watcher's score on each token, streamed token by token
    as the model produces it (a chunked HTML response, no JavaScript); GET like /text, or a POST form
    (refused from another site's page)."""
    watchers = [] if monitor is None else [
        {"name": w.name, "kind": "latent" if isinstance(w, LatentWatcher) else "probe", "site": w.site,
         "threshold": t, "top": t if t > 0 else 1.0}
        for w, t in zip(monitor.watchers, monitor.thresholds, strict=True)
    ]  # fmt: skip

    def respond(prompt: str, new_tokens: str) -> Response:
        values: dict[str, Any] = {"prompt": prompt, "new_tokens": new_tokens, "watchers": watchers, "monitor": monitor,
                  "missing": None if monitor else MONITOR_MISSING}  # fmt: skip
        if monitor is None or not prompt:
            return board.page("monitor.html", stream=None, **values)
        if not new_tokens.strip().isdecimal() or len(new_tokens) > 6:
            raise InputError(f"new tokens must be a whole number (e.g. 24), not {new_tokens[:20]!r}")
        stream = MonitorStream(monitor, prompt, int(new_tokens)).start()  # checks the lengths first
        chunks = board.env.get_template("monitor.html").generate(
            links=board.links, meta=board.store.meta, stream=stream, **values
        )
        return StreamingResponse(chunks, media_type="text/html; charset=utf-8")

    @app.get("/monitor", response_class=HTMLResponse)
    def monitor_page(prompt: str = "", new_tokens: str = "24") -> Response:
        check_query("prompt", prompt, MAX_PROMPT_CHARS)
        return respond(prompt, new_tokens)

    @app.post("/monitor", response_class=HTMLResponse)
    async def monitor_form(request: Request) -> Response:
        form = await read_form(request)
        return respond(form.get("prompt", ""), form.get("new_tokens", "24"))
