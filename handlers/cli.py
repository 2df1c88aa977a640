"""`slack-assistant`: Socket Mode by default, `--http --port N` for Bolt's HTTP endpoint. That process only
acks and queues; it starts WORKER_PROCESSES child processes (`slack-assistant worker`) that run the turns,
and supervises them (WORKER_PROCESSES=0: it runs the turns itself). `slack-assistant worker` runs queued
turns only (no Slack listener); with WORKER_CONCURRENCY=0 a listening process starts no workers and only
acks and queues, for workers run elsewhere. `slack-assistant cleanup-orphans` deletes OpenAI files and
vector stores no thread maps any more; `slack-assistant check` tests the configuration (tokens, scopes,
model, Redis, knowledge stores) and prints a pass/fail table."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.errors import ConfigError
from bot.files.sweep import cleanup_orphans
from bot.ops.logs import JsonFormatter
from bot.ops.metrics import CONTENT_TYPE
from bot.ops.workers import WorkerChildren, is_worker_child, lower_priority, watch_parent
from bot.preflight.check import DEFAULT_TIMEOUT_SECONDS, default_manifest, run_checks
from bot.root import Bot
from bot.settings import Mode, Settings, load_settings
from bot.tools import ToolRegistry, registry_from
from handlers.app import build_app, build_web_app

log = logging.getLogger("slack_assistant")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="slack-assistant",
        description="Slack <-> OpenAI assistant threads. Socket Mode by default.",
    )
    parser.add_argument(
        "--http", action="store_true", help="serve Slack's HTTP requests instead of Socket Mode"
    )
    parser.add_argument("--host", default="0.0.0.0", help="HTTP mode: address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="HTTP mode: port (default 3000); worker: serve only GET /healthz, /readyz and /metrics on "
        "this port (default: none)",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["check", "cleanup-orphans", "worker"],
        help="worker: run queued turns, take no Slack requests; "
        "cleanup-orphans: delete the OpenAI files and vector stores no thread maps any more, and exit; "
        "check: test tokens, scopes, model, Redis and knowledge stores, print a table, exit 1 on a failure",
    )
    parser.add_argument(
        "--min-age-hours",
        type=float,
        default=1.0,
        help="cleanup-orphans: leave objects younger than this alone (default 1)",
    )
    parser.add_argument("--dry-run", action="store_true", help="cleanup-orphans: only report")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="check: the Slack app manifest whose bot scopes the token must have (default: manifest.yml)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"check: seconds each service gets to answer (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    return parser.parse_args(argv)


def _configure_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # Library debug logs can include request bodies; keep them quiet unless asked for.
    for noisy in ("slack_bolt", "slack_sdk", "openai", "httpx2", "httpcore2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "DEBUG" else logging.INFO)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.command == "cleanup-orphans":
        _cleanup(args)
        return
    if args.command == "check":
        _check(args)
        return
    mode = Mode.WORKER if args.command == "worker" else Mode.HTTP if args.http else Mode.SOCKET
    try:
        settings = load_settings(mode)
        tools = registry_from(settings)  # the teams' tool modules are imported (and checked) up front
    except ConfigError as exc:
        print(f"slack-assistant: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if mode is Mode.WORKER and settings.worker_concurrency == 0:
        print("slack-assistant: a worker needs WORKER_CONCURRENCY of 1 or more", file=sys.stderr)
        raise SystemExit(2)
    _configure_logging(settings.log_level, settings.log_format)
    if mode is Mode.WORKER and is_worker_child():
        lower_priority()
    port = args.port if args.port is not None or mode is Mode.WORKER else 3000
    _run(_serve(settings, mode, args.host, port, tools), settings)


def _run(main: Coroutine[Any, Any, None], settings: Settings) -> None:
    """Run the process's main coroutine on the event loop the settings name (uvloop when installed)."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not installed here (it has no Windows build): asyncio's own loop
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main)
            return
    asyncio.run(main)


def _tool_settings() -> Settings:
    """Settings for a maintenance command (no app token or signing secret needed), or exit 2 naming the
    problems."""
    try:
        return load_settings(Mode.TOOL)
    except ConfigError as exc:
        print(f"slack-assistant: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _cleanup(args: argparse.Namespace) -> None:
    settings = _tool_settings()
    _configure_logging(settings.log_level, settings.log_format)
    report = asyncio.run(
        cleanup_orphans(settings, min_age_seconds=args.min_age_hours * 3600, dry_run=args.dry_run)
    )
    print(report.summary())
    if report.failed:
        raise SystemExit(1)


def _check(args: argparse.Namespace) -> None:
    # Only what it checks: the app token is checked when set, the signing secret not needed.
    settings = _tool_settings()
    if args.timeout <= 0:
        print("slack-assistant: --timeout must be more than 0", file=sys.stderr)
        raise SystemExit(2)
    # The table is the output; library chatter (and the bot's INFO lines) would only clutter it.
    _configure_logging("WARNING")
    manifest = args.manifest if args.manifest is not None else default_manifest()
    report = asyncio.run(run_checks(settings, manifest=manifest, seconds=args.timeout))
    print(report.table())
    if report.failures:
        raise SystemExit(1)


async def _serve(settings: Settings, mode: Mode, host: str, port: int | None, tools: ToolRegistry) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    children = _children_wanted(settings, mode)
    # With worker children this process runs no turns: it acks and queues, as a front.
    front = settings.model_copy(update={"worker_concurrency": 0}) if children else settings
    bot = Bot.from_settings(front, tools)
    bot.start()
    if mode is Mode.WORKER:
        watch_parent(stop.set)  # a worker child stops with the one command, however that ended
        try:
            await _serve_worker(bot, host, port, stop)
        finally:
            await bot.aclose(settings.shutdown_grace_seconds)
            log.info("stopped")
        return
    app = build_app(front, bot, mode)
    workers: WorkerChildren | None = None
    if children:
        env = dict(os.environ)
        if (url := bot.embedded_redis_url) is not None:
            env["REDIS_URL"] = url  # the children use the Redis this process started
        workers = WorkerChildren(children, env, grace_seconds=settings.shutdown_grace_seconds)
    try:
        if workers is not None:
            await workers.start()
        if mode is Mode.HTTP:
            # HTTP mode always has a port, and load_settings() refuses it without a signing secret.
            assert port is not None and settings.slack_signing_secret is not None
            web_app = build_web_app(app, settings.slack_signing_secret.get_secret_value(), bot.metrics)
            await _serve_http(web_app, bot, host, port, stop)
        else:
            await _serve_socket_mode(app, bot, settings, stop)
    finally:
        if workers is not None:  # before Redis closes: an embedded one stops with this process
            await workers.stop()
        await bot.aclose(settings.shutdown_grace_seconds)
        log.info("stopped")


def _children_wanted(settings: Settings, mode: Mode) -> int:
    """Worker processes the one command starts: none for a worker, a front (WORKER_CONCURRENCY=0) or
    WORKER_PROCESSES=0 (turns run in the process itself)."""
    if mode is Mode.WORKER or settings.worker_concurrency == 0:
        return 0
    return settings.worker_process_count


def _add_healthz(web_app: web.Application, bot: Bot) -> None:
    """GET /healthz (liveness), /readyz (Redis and the turn queue readable) and /metrics (Prometheus)."""

    async def healthz(_: web.Request) -> web.Response:
        redis_ok = await bot.ping()
        return web.json_response({"ok": redis_ok, "redis": redis_ok}, status=200 if redis_ok else 503)

    async def readyz(_: web.Request) -> web.Response:
        reason = await bot.not_ready()
        if reason is not None:
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=await bot.metrics_text(), headers={"Content-Type": CONTENT_TYPE})

    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)


async def _serve_worker(bot: Bot, host: str, port: int | None, stop: asyncio.Event) -> None:
    """Run turns from the queue until SIGTERM; with a port, answer health checks there (nothing else)."""
    runner: web.AppRunner | None = None
    if port is not None:
        web_app = web.Application()
        _add_healthz(web_app, bot)
        runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
    served = f"; GET /healthz, /readyz, /metrics on {host}:{port}" if port else ""
    log.info("worker: running queued turns%s", served)
    await stop.wait()
    log.info("SIGTERM: no new turns; finishing turns in flight")
    if runner is not None:
        await runner.cleanup()


async def _serve_http(web_app: web.Application, bot: Bot, host: str, port: int, stop: asyncio.Event) -> None:
    _add_healthz(web_app, bot)
    runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("HTTP mode: serving POST /slack/events and GET /healthz, /readyz, /metrics on %s:%d", host, port)
    await stop.wait()
    log.info("SIGTERM: no new requests; finishing turns in flight")
    # Stop accepting first, then let Bot.aclose() drain the running turns.
    await site.stop()
    await runner.cleanup()


async def _serve_socket_mode(app: object, bot: Bot, settings: Settings, stop: asyncio.Event) -> None:
    assert settings.slack_app_token is not None  # load_settings() guarantees it in Socket Mode
    handler = AsyncSocketModeHandler(
        app,  # type: ignore[arg-type]
        app_token=settings.slack_app_token.get_secret_value(),
        web_client=bot.web_client,
    )
    await handler.connect_async()
    log.info("Socket Mode: connected")
    await stop.wait()
    log.info("SIGTERM: disconnecting; finishing turns in flight")
    await handler.close_async()


if __name__ == "__main__":  # `python -m handlers.cli worker`: how the one command starts its workers
    main()
