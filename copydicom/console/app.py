"""The console's web application (FastAPI, server-rendered Jinja2 templates, no JavaScript build).

FastAPI over plain Starlette for the JSON twins under ``/api/``: their
OpenAPI description (``/api/openapi.json``, authenticated) comes for free and
scripts can be generated from it.  Pages and API share one authentication:

- ``/api/...`` accepts HTTP basic auth with the console users (no cookie, so
  no CSRF token is needed) or a session cookie (then the ``X-CSRF-Token``
  header must carry the session's token on every POST);
- pages use a signed session cookie (HttpOnly, SameSite=Strict, Secure under
  TLS) set by the login form, and every state-changing form carries the
  session's CSRF token;
- logins are rate-limited per client address and per user name;
- in ``proxy_header`` mode a trusted reverse proxy names the user.

``viewer`` reads; ``operator`` retries, purges and uploads; a ``phi`` user may
reveal patient-identifying tags of a quarantined file (audited).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import UploadFile
from starlette.middleware.sessions import SessionMiddleware

from copydicom.console._backend import AuditLog, Backend
from copydicom.console._config import ConsoleConfig
from copydicom.console._jobs import JobManager
from copydicom.console._security import LoginLimiter, new_token, parse_basic, same_token
from copydicom.console._upload import Limits, Receiver, UploadRejected
from copydicom.console._users import User, UserStore
from copydicom.console._workdir import make_work_dir

_TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_TEMPLATES.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Console:
    """Everything the request handlers share."""

    config: ConsoleConfig
    backend: Backend
    users: UserStore
    jobs: JobManager | None
    audit: AuditLog
    limiter: LoginLimiter
    work_dir: Path


def _secret(config: ConsoleConfig) -> str:
    if config.session_secret_file is not None:
        from copydicom.secrets import read_secret_file

        return read_secret_file(config.session_secret_file, where="console.session_secret_file")
    return secrets.token_urlsafe(48)


def create_app(
    config: ConsoleConfig, backend: Backend, *, jobs: JobManager | None = None, work_dir: Path | None = None
) -> FastAPI:
    """Build the console application.

    Parameters
    ----------
    config
        The ``console:`` section.
    backend
        What the pages show and do (:class:`~copydicom.console._backend.StateBackend`).
    jobs
        Runs uploads; without it the upload page says uploads are not available.
    work_dir
        Where uploads are received (a private folder is made inside; default: a temp dir); the
        folders earlier consoles left there are removed (:mod:`copydicom.console._workdir`).
    """
    app = FastAPI(title="copydicom console", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    base = make_work_dir(work_dir)  # earlier consoles' stale upload folders are removed first
    console = Console(config, backend, UserStore(config.users_file), jobs, AuditLog(config.audit_log),
                      LoginLimiter(config.login_attempts), base)
    app.state.console = console
    app.add_middleware(
        SessionMiddleware, secret_key=_secret(config), session_cookie="copydicom_session",
        max_age=int(config.session_hours * 3600), same_site="strict", https_only=config.tls is not None,
    )

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except _Denied as exc:  # pragma: no cover - handlers return, the exception handler below answers
            response = PlainTextResponse(exc.message, status_code=exc.status)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(_Denied)
    async def denied(request: Request, exc: _Denied) -> Response:
        if exc.status == 401 and not request.url.path.startswith("/api/"):
            return RedirectResponse("/login", status_code=303)
        headers = {"WWW-Authenticate": 'Basic realm="copydicom"'} if exc.status == 401 else None
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
        return _page(request, "error.html", None, {"message": exc.message}, status=exc.status)

    _routes(app, console)
    return app


# -- authentication ------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _limit_keys(request: Request, console: Console, name: str) -> tuple[str, str]:
    """The login limiter's keys: the client's address and the user name.

    Behind a trusted reverse proxy every request comes from the proxy's address, so the address is
    the one the proxy names last in ``X-Forwarded-For`` (five bad logins of one client must not lock
    every user out); from any other client the header is ignored (it could be forged).
    """
    address = _client(request)
    if address in console.config.trusted_proxies:
        forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",") if a.strip()]
        if forwarded:
            address = forwarded[-1]
    return f"ip:{address}", f"user:{name}"


def _user(request: Request, console: Console) -> tuple[User, bool]:
    """The authenticated user and whether it came by HTTP basic auth (no cookie: no CSRF)."""
    basic = parse_basic(request.headers.get("authorization"))
    if basic is not None:
        name, password = basic
        keys = _limit_keys(request, console, name)
        if console.limiter.blocked(*keys):
            raise _Denied(429, "too many failed logins; wait a few minutes")
        user = console.users.verify(name, password, cache_seconds=300)
        if user is None:
            console.limiter.failed(*keys)
            raise _Denied(401, "authentication required")
        console.limiter.succeeded(*keys)
        return user, True
    if console.config.auth == "proxy_header":
        if _client(request) in console.config.trusted_proxies:
            header = request.headers.get(console.config.proxy_header) or ""
            user = console.users.get(header) if header else None
            if user is not None:
                request.session.setdefault("csrf", new_token())
                return user, False
        raise _Denied(401, "authentication required")
    session_name = request.session.get("user")
    session_user = console.users.get(session_name) if isinstance(session_name, str) else None
    if session_user is None:
        raise _Denied(401, "authentication required")
    return session_user, False


def _require(request: Request, console: Console, *, operator: bool = False, csrf: bool = False) -> User:
    user, by_basic = _user(request, console)
    if operator and not user.can_operate:
        raise _Denied(403, "this needs the operator role")
    if csrf and not by_basic:
        given = request.headers.get("x-csrf-token") or getattr(request.state, "form_csrf", None)
        if not same_token(request.session.get("csrf"), given):
            raise _Denied(403, "missing or wrong CSRF token: reload the page and try again")
    return user


async def _form_with_csrf(request: Request) -> Any:
    form = await request.form(max_files=100_000, max_fields=10_000)
    token = form.get("csrf_token")
    request.state.form_csrf = token if isinstance(token, str) else None
    return form


def _page(request: Request, template: str, user: User | None, context: dict[str, Any], *, status: int = 200) -> Response:
    csrf = request.session.get("csrf") if "session" in request.scope else None
    return _TEMPLATES.TemplateResponse(
        request, template, {"user": user, "csrf_token": csrf, **context}, status_code=status
    )


# -- handlers ------------------------------------------------------------------------------


def _routes(app: FastAPI, console: Console) -> None:  # noqa: C901 - one place lists every URL
    backend = console.backend

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        request.session.setdefault("csrf", new_token())
        return _page(request, "login.html", None, {"error": ""})

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await _form_with_csrf(request)
        if not same_token(request.session.get("csrf"), request.state.form_csrf):
            raise _Denied(403, "missing or wrong CSRF token: reload the page and try again")
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        keys = _limit_keys(request, console, name)
        if console.limiter.blocked(*keys):
            return _page(request, "login.html", None, {"error": "Too many failed attempts; wait a few minutes."},
                         status=429)
        user = console.users.verify(name, password)
        if user is None:
            console.limiter.failed(*keys)
            return _page(request, "login.html", None, {"error": "Wrong user name or password."}, status=401)
        console.limiter.succeeded(*keys)
        request.session.clear()  # no session fixation: a new session (and CSRF token) at every login
        request.session.update({"user": user.name, "csrf": new_token(), "at": time.time()})
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await _form_with_csrf(request)
        _require(request, console, csrf=True)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # overview

    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        user = _require(request, console)
        return _page(request, "overview.html", user, {"routes": backend.routes(), "spool": backend.spool_depth()})

    @app.get("/api/routes")
    async def api_routes(request: Request) -> Response:
        _require(request, console)
        return JSONResponse({"routes": [r.as_dict() for r in backend.routes()], "index_spool": backend.spool_depth()})

    # quarantine

    def _filters(request: Request) -> dict[str, Any]:
        q = request.query_params
        since = None
        if q.get("since"):
            try:
                since = time.mktime(time.strptime(q["since"], "%Y-%m-%d"))
            except ValueError:
                raise _Denied(400, "since: a date YYYY-MM-DD") from None
        try:
            offset = max(0, int(q.get("offset", "0")))
        except ValueError:
            raise _Denied(400, "offset: a whole number") from None
        return {"route": q.get("route") or None, "code": q.get("code") or None, "since": since, "offset": offset}

    @app.get("/quarantine", response_class=HTMLResponse)
    async def quarantine(request: Request) -> Response:
        user = _require(request, console)
        f = _filters(request)
        items, total = backend.quarantine(limit=200, **f)
        return _page(request, "quarantine.html", user, {
            "items": items, "total": total, "filters": request.query_params, "offset": f["offset"],
            "routes": backend.route_names(),
        })

    @app.get("/api/quarantine")
    async def api_quarantine(request: Request) -> Response:
        _require(request, console)
        f = _filters(request)
        items, total = backend.quarantine(limit=1000, **f)
        return JSONResponse({"total": total, "items": [i.as_dict() for i in items]})

    @app.get("/quarantine/{item_id}", response_class=HTMLResponse)
    async def quarantine_item(request: Request, item_id: str) -> Response:
        user = _require(request, console)
        tags = backend.tag_summary(item_id, reveal=False)
        if tags is None:
            raise _Denied(404, "no such quarantine entry")
        return _page(request, "quarantine_item.html", user, {"item_id": item_id, "tags": tags, "revealed": False})

    @app.post("/quarantine/{item_id}/reveal", response_class=HTMLResponse)
    async def reveal(request: Request, item_id: str) -> Response:
        await _form_with_csrf(request)
        user = _require(request, console, operator=True, csrf=True)
        if not user.can_reveal:
            raise _Denied(403, "revealing patient data needs the phi permission")
        tags = backend.tag_summary(item_id, reveal=True)
        if tags is None:
            raise _Denied(404, "no such quarantine entry")
        console.audit.write(user.name, "reveal", entry=item_id)
        return _page(request, "quarantine_item.html", user, {"item_id": item_id, "tags": tags, "revealed": True})

    async def _act(request: Request, action: str, item_ids: list[str], user: User) -> dict[str, Any]:
        if action == "retry":
            counts = backend.retry(item_ids)
            console.audit.write(user.name, "retry", entries=item_ids, counts=counts)
            return {"counts": counts}
        purged = backend.purge(item_ids)
        console.audit.write(user.name, "purge", entries=item_ids, purged=purged)
        return {"purged": purged}

    @app.post("/quarantine/action")
    async def quarantine_action(request: Request) -> Response:
        form = await _form_with_csrf(request)
        user = _require(request, console, operator=True, csrf=True)
        action = str(form.get("action", ""))
        if action not in ("retry", "purge"):
            raise _Denied(400, "action: retry or purge")
        ids = [str(v) for v in form.getlist("ids")]
        result = await _act(request, action, ids, user)
        return _page(request, "done.html", user, {"action": action, "result": result, "n": len(ids)})

    @app.post("/api/quarantine/{item_id}/retry")
    async def api_retry(request: Request, item_id: str) -> Response:
        user = _require(request, console, operator=True, csrf=True)
        return JSONResponse(await _act(request, "retry", [item_id], user))

    @app.post("/api/quarantine/{item_id}/purge")
    async def api_purge(request: Request, item_id: str) -> Response:
        user = _require(request, console, operator=True, csrf=True)
        return JSONResponse(await _act(request, "purge", [item_id], user))

    # dose

    @app.get("/dose", response_class=HTMLResponse)
    async def dose(request: Request) -> Response:
        user = _require(request, console)
        return _page(request, "dose.html", user, {"report": backend.dose_report()})

    # uploads

    @app.get("/upload", response_class=HTMLResponse)
    async def upload_form(request: Request) -> Response:
        user = _require(request, console)
        return _page(request, "upload.html", user, {
            "routes": backend.route_names(), "available": console.jobs is not None,
            "roots": [str(r) for r in console.config.folder_roots],
        })

    async def _receive(request: Request, user: User) -> dict[str, Any]:
        if console.jobs is None:
            raise _Denied(503, "uploads are not available in this console")
        form = await _form_with_csrf(request)
        _require(request, console, operator=True, csrf=True)
        route = str(form.get("route", ""))
        if route not in backend.route_names():
            raise _Denied(400, "route: not a configured route")
        limits = console.config.upload
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=console.work_dir))
        receiver = Receiver(folder, Limits(limits.max_upload_mb << 20, limits.max_files,
                                           limits.max_expanded_mb << 20, limits.max_zip_ratio))
        patient_csv: Path | None = None
        try:
            for item in form.getlist("files"):
                if isinstance(item, UploadFile) and item.filename:
                    receiver.add_file(item.filename, item.file)
            server_folder = str(form.get("folder", "") or "")
            if server_folder:
                _add_server_folder(receiver, server_folder, console.config.folder_roots)
            csv_item = form.get("csv")
            if isinstance(csv_item, UploadFile) and csv_item.filename:
                patient_csv = folder / "patients.csv"
                data = await csv_item.read(8 << 20)
                patient_csv.write_bytes(data)
                patient_csv.chmod(0o600)
        except UploadRejected as exc:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise _Denied(400, str(exc)) from None
        received = receiver.received
        if not received.accepted:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise _Denied(400, f"no DICOM file in the upload ({len(received.refused)} item(s) refused)")
        job = console.jobs.submit(received.accepted, route=route, user=user.name, patient_csv=patient_csv,
                                  folder=folder, refused=received.refused)
        console.audit.write(user.name, "upload", job=job.id, route=route, files=len(received.accepted))
        return {"job": job.id}

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        user = _require(request, console, operator=True)  # CSRF is checked once the form is read
        result = await _receive(request, user)
        return RedirectResponse(f"/jobs/{result['job']}", status_code=303)

    @app.post("/api/uploads")
    async def api_upload(request: Request) -> Response:
        user = _require(request, console, operator=True)
        return JSONResponse(await _receive(request, user), status_code=202)

    def _job(job_id: str) -> Any:
        job = console.jobs.get(job_id) if console.jobs else None
        if job is None:
            raise _Denied(404, "no such job")
        return job

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: str) -> Response:
        user = _require(request, console)
        job = _job(job_id)
        return _page(request, "job.html", user, {"job": job.as_dict()})

    @app.get("/api/jobs/{job_id}")
    async def api_job(request: Request, job_id: str) -> Response:
        _require(request, console)
        return JSONResponse(_job(job_id).as_dict())

    @app.get("/jobs/{job_id}/result.csv")
    async def job_result(request: Request, job_id: str) -> Response:
        _require(request, console)
        job = _job(job_id)
        return PlainTextResponse(job.result_csv(), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="upload-{job.id}.csv"'})


def _add_server_folder(receiver: Receiver, folder: str, roots: tuple[Path, ...]) -> None:
    """Read DICOM files from a server-side folder, only inside a configured root (symlinks not followed)."""
    target = Path(folder).resolve()
    if not any(target == r.resolve() or r.resolve() in target.parents for r in roots):
        raise UploadRejected("folder: not inside a configured folder root")
    import os

    for dirpath, _dirs, names in os.walk(target, followlinks=False):
        for name in sorted(names):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            with path.open("rb") as handle:
                receiver.add_file(str(path), handle)
