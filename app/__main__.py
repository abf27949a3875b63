"""The `rapport` command line: serve, migrate, worker, publish, create-user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from app.accounts.models import Role
from app.config import Settings

cli = typer.Typer(
    name="rapport",
    help="Rapport: courses and e-books that turn buyers into clients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    from app.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            err.print(f"[red]configuration error[/red] {where}: {e['msg']}")
        raise typer.Exit(2) from exc


def _database_error(exc: Exception) -> NoReturn:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    err.print(f"[red]database error[/red] {first}")
    err.print("is the database reachable and migrated? (`rapport migrate`); nothing was changed")
    raise typer.Exit(1) from exc


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from app import migrate as m

    settings = _settings()
    try:
        m.upgrade(settings.database_url)
    except SQLAlchemyError as exc:
        _database_error(exc)
    out.print("[green]database is up to date[/green]")


WORKERS_KILL_TIMEOUT = 10  # seconds for requests in flight to finish on SIGTERM


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64)] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate")] = True,
) -> None:
    """Migrate, then serve the app with granian."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from app import migrate as m
    from app.guard import MAX_HEADERS

    settings = _settings()
    if migrate_first:
        try:
            m.upgrade(settings.database_url)
        except SQLAlchemyError as exc:
            _database_error(exc)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    out.print(f"[bold]Rapport[/bold] serving on [link]http://{shown}:{port}[/link]")
    # granian, not uvicorn: uvicorn sets no time limit on reading a request's headers (a
    # client sending a byte a second keeps its connection for ever) and with httptools no
    # size limit either (a 64 MiB header was read and answered 200). granian closes a
    # connection whose headers are not complete in time, and answers 431 once they outgrow
    # its buffer (twice the 64 KiB: hyper may refuse a head that nearly fills it, depending
    # on how it arrives); the app's HeaderLimit makes the 64 KiB exact.
    Server(
        "app.main:create_served_app",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,  # HTTP/2 is for the proxy in front (README "Deploy")
        http1_settings=HTTP1Settings(
            header_read_timeout=settings.header_timeout * 1000,
            max_buffer_size=2 * MAX_HEADERS,
        ),
        log_access=False,
        log_level=LogLevels.warning,
        # A worker still starting when SIGTERM comes misses it and would keep the server up
        # for ever; after this many seconds of graceful stop it is killed.
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
    ).serve()


@cli.command()
def worker(
    burst: Annotated[
        bool, typer.Option("--burst", help="run every queued job and due retry, then exit")
    ] = False,
) -> None:
    """Run background jobs from the Redis queue (needs RAPPORT_REDIS_URL)."""
    from app.jobs.base import JobsUnavailable
    from app.jobs.runner import build_context, uses_redis
    from app.logs import configure_logging

    settings = _settings()
    if not settings.redis_url or not uses_redis(settings):
        err.print(
            "[red]configuration error[/red] `rapport worker` takes jobs from Redis: set "
            "RAPPORT_REDIS_URL (e.g. redis://127.0.0.1:6379/0) and leave RAPPORT_JOBS=auto. "
            "Without Redis the app runs its jobs in process and needs no worker."
        )
        raise typer.Exit(2)
    from app.integrations.queue import RedisRunner

    configure_logging(level=settings.log_level, json=settings.log_json)
    runner = RedisRunner(settings.redis_url, queue=settings.jobs_queue)
    context = build_context(settings, runner)
    err.print(f"[bold]Rapport[/bold] worker on queue [bold]{settings.jobs_queue}[/bold]")
    try:
        runner.work(context, burst=burst, log_level=settings.log_level.upper())
    except JobsUnavailable as exc:
        err.print(f"[red]queue error[/red] {exc}; is Redis running?")
        raise typer.Exit(1) from exc
    finally:
        runner.shutdown()
        context.engine.dispose()


@cli.command()
def publish(
    path: Annotated[Path, typer.Argument(help="a course folder, e.g. courses/trust-at-a-distance")],
    server: Annotated[
        str | None,
        typer.Option(help="publish to this running server (its URL), not the local database"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="an author's API token for --server (from the account page)",
            envvar="RAPPORT_API_TOKEN",
        ),
    ] = None,
) -> None:
    """Create or update a product from a course folder (idempotent), here or on --server."""
    if server is not None:
        _publish_remote(path, server, token)
        return
    from app.catalog.manifest import ManifestError
    from app.catalog.service import inspect_folder, publish_folder
    from app.db import make_engine
    from app.delivery.storage import StorageError, make_storage

    settings = _settings()
    try:
        inspect_folder(path)  # validate fully before touching database or storage
    except ManifestError as exc:
        err.print(f"[red]error[/red] {exc.path}: field [bold]{exc.field}[/bold]: {exc.message}")
        err.print("nothing was changed")
        raise typer.Exit(2) from exc

    engine = make_engine(settings.database_url)
    storage = make_storage(settings)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:

        def track(name: str, size: int, _index: int):  # type: ignore[no-untyped-def]
            task = progress.add_task(f"uploading {name}", total=size)
            return lambda n: progress.advance(task, n)

        try:
            with Session(engine) as session:
                report = publish_folder(
                    session=session,
                    storage=storage,
                    folder=path,
                    progress=track,
                    renditions=settings.hls_renditions,
                )
                session.commit()
        except ManifestError as exc:
            err.print(f"[red]error[/red] {exc.path}: field [bold]{exc.field}[/bold]: {exc.message}")
            raise typer.Exit(2) from exc
        except StorageError as exc:
            err.print(f"[red]storage error[/red] {exc}; the database was not changed")
            raise typer.Exit(1) from exc
        except SQLAlchemyError as exc:
            _database_error(exc)
    engine.dispose()
    verb = "created" if report.created else "updated"
    uploaded = (
        f"uploaded {len(report.uploaded)} file(s), {report.uploaded_bytes / 1e6:.1f} MB"
        if report.uploaded
        else "nothing uploaded"
    )
    out.print(
        f"[green]{verb}[/green] [bold]{report.slug}[/bold]: {uploaded}; "
        f"{report.reused} unchanged file(s) reused; lessons: {report.lessons_added} added, "
        f"{report.lessons_updated} updated, {report.lessons_unchanged} unchanged, "
        f"{report.lessons_removed} removed"
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _publish_remote(path: Path, server: str, token: str | None) -> None:
    """`publish --server`: the same folder checks, then the server's upload path and API."""
    from app.authoring.remote import RemoteError, publish_remote
    from app.catalog.manifest import ManifestError

    if not token:
        err.print("[red]error[/red] --server needs --token (or RAPPORT_API_TOKEN): an author's")
        err.print("API token, made on the account page of that server")
        raise typer.Exit(2)
    with _progress() as progress:

        def track(name: str, size: int) -> Callable[[int], None]:
            task = progress.add_task(f"uploading {name}", total=size)
            return lambda n: progress.advance(task, n)

        try:
            report = publish_remote(path, server=server, token=token, track=track)
        except ManifestError as exc:
            err.print(f"[red]error[/red] {exc.path}: field [bold]{exc.field}[/bold]: {exc.message}")
            err.print("nothing was changed")
            raise typer.Exit(2) from exc
        except RemoteError as exc:
            err.print(f"[red]error[/red] {exc}")
            err.print("files uploaded so far are kept: run the command again to go on")
            raise typer.Exit(2 if exc.status in (401, 403, 413, 415, 422) else 1) from exc
    lessons = ", ".join(f"{v} {k.removeprefix('lessons_')}" for k, v in report.lessons.items())
    uploaded = (
        f"uploaded {len(report.uploaded)} file(s), {report.uploaded_bytes / 1e6:.1f} MB"
        if report.uploaded
        else "nothing uploaded"
    )
    verb = "created" if report.created else "updated"
    out.print(
        f"[green]{verb}[/green] [bold]{report.slug}[/bold] on {server}: {uploaded}; "
        f"{report.reused} file(s) the server had reused; lessons: {lessons}",
        soft_wrap=True,
    )


@cli.command("create-user")
def create_user(
    email: Annotated[str, typer.Argument(help="the user's email address")],
    role: Annotated[Role, typer.Option(help="buyer, author or admin")] = Role.buyer,
    name: Annotated[str, typer.Option(help="display name")] = "",
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="succeed quietly when the user exists")
    ] = False,
) -> None:
    """Create a user with a role."""
    from app.accounts import service
    from app.db import make_engine

    settings = _settings()
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        try:
            existing = service.get_user_by_email(
                session=session, email=service.normalize_email(email)
            )
            if existing and if_missing:
                out.print(f"{existing.role} {existing.email} exists")
                return
            user = service.create_user(session=session, email=email, role=role, name=name)
            session.commit()
            out.print(f"[green]created[/green] {user.role} {user.email} (id {user.id})")
        except service.AccountError as exc:
            err.print(f"[red]error[/red] {exc}")
            raise typer.Exit(2) from exc
        except SQLAlchemyError as exc:
            _database_error(exc)


@cli.command("login-link")
def login_link(
    email: Annotated[str, typer.Argument(help="the user's email address")],
) -> None:
    """Print a one-time sign-in link for an existing user (valid for RAPPORT_MAGIC_LINK_TTL)."""
    from app.accounts import service
    from app.db import make_engine

    settings = _settings()
    engine = make_engine(settings.database_url)
    with Session(engine) as session:
        try:
            user = service.get_user_by_email(session=session, email=service.normalize_email(email))
            if user is None:
                err.print(f"[red]error[/red] no user with email {email}")
                raise typer.Exit(2)
            token = service.create_login_link(
                session=session, email=user.email, ttl_seconds=settings.magic_link_ttl
            )
            who = f"{user.email} ({user.role})"
            session.commit()
        except service.AccountError as exc:
            err.print(f"[red]error[/red] {exc}")
            raise typer.Exit(2) from exc
        except SQLAlchemyError as exc:
            _database_error(exc)
    minutes = settings.magic_link_ttl // 60
    out.print(
        f"sign in as [bold]{who}[/bold] within {minutes} minutes, once:\n"
        f"  {settings.base_url.rstrip('/')}/auth/magic?token={token}",
        soft_wrap=True,
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
