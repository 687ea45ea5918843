"""Run a set of services in one process: ``mailstack serve [SERVICE ...]``.

One store, one authenticator and one TLS provider are shared by every
service; each service's ``serve(ctx, task_status=...)`` binds its listeners
and reports them with ``task_status.started(list[Bound])``.  Service modules
are imported lazily, so a service that is missing from this build (or still
being written) never breaks the others.

Signals: SIGHUP reloads the TLS certificate and re-reads the config file,
applying the log level and naming the changed settings that need a restart;
SIGTERM/SIGINT stop gracefully
(listeners close first, ``ctx.shutdown`` tells the services so they can end
idle sessions politely, open sessions get ``[service]
shutdown_grace_seconds`` to finish, then are cancelled); a second
SIGTERM/SIGINT cancels at once.  Under systemd the unit is ``Type=notify``:
READY=1 once every listener is bound.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import resource
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from mailstack import gc_tuning, net, systemd
from mailstack.auth.authenticator import Authenticator
from mailstack.config import SECTIONS, Config, ConfigError, load_config
from mailstack.logs import setup_logging
from mailstack.store.store import Store
from mailstack.tls import TlsProvider

logger = logging.getLogger("mailstack.service")

# name -> "module:function"; the function is
# ``async def serve(ctx: ServiceContext, *, task_status) -> None``.
SERVICES: dict[str, str] = {
    "smtp": "mailstack.smtp.server:serve_mx",
    "submission": "mailstack.smtp.server:serve_submission",
    "imap": "mailstack.imap.server:serve",
    "pop3": "mailstack.pop3.server:serve",
    "websocket": "mailstack.websocket.server:serve",
    # No listeners: delivers the outbound queue when [outbound] enabled.
    "queue": "mailstack.smtp.outbound:serve",
}

# The services whose sessions follow the store's change log (IMAP IDLE and
# NOTIFY, POP3's expunge notices, WebSocket pushes): only a process running
# one of them runs the store's change watcher.
SUBSCRIBING_SERVICES = frozenset({"imap", "pop3", "websocket"})

ServeFunction = Callable[..., Awaitable[None]]


class Shutdown:
    """How sessions learn that a graceful stop began (``ctx.shutdown``).

    A session waiting for its client's next command wraps that wait in
    :meth:`idle`; when the stop begins (or has begun) the wait is cancelled
    and ``scope.cancelled_caught`` tells the session to say goodbye and end::

        with ctx.shutdown.idle() as idle:
            data = await net.receive_some(stream, RECEIVE_BYTES)
        if idle.cancelled_caught:
            await net.send_all(stream, b"* BYE shutting down\r\n")
            return

    Only the wait *between* commands belongs in ``idle()``: work in progress
    (an SMTP DATA transfer, a FETCH being sent) simply continues and has the
    grace period to finish.  Cancelling a receive loses no data, also on TLS.
    ``event`` is there for tasks that would rather wait on it.
    """

    def __init__(self) -> None:
        self.event = trio.Event()
        # Whether the stop began: the event's state as a plain attribute,
        # which every SMTP command wait reads (no two calls each time).
        self.started = False
        self._idle: set[trio.CancelScope] = set()

    @contextlib.contextmanager
    def idle(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            if self.started:
                scope.cancel()
            self._idle.add(scope)
            try:
                yield scope
            finally:
                self._idle.discard(scope)

    def begin(self) -> None:
        """Start the stop: wake every session waiting in :meth:`idle`."""
        self.started = True
        self.event.set()
        for scope in self._idle:
            scope.cancel()


@dataclass(frozen=True, slots=True)
class ServiceContext:
    """What every service gets: shared by all services in the process."""

    config: Config
    store: Store
    auth: Authenticator
    tls: TlsProvider
    shutdown: Shutdown = field(default_factory=Shutdown)
    # Certificates of a service's own (e.g. [websocket] cert_file): SIGHUP
    # reloads these too.
    other_tls: list[TlsProvider] = field(default_factory=list)


class ServiceUnavailable(ConfigError):
    """A service was asked for that this build does not have.

    A ConfigError so the CLI exits with status 2: restarting will not help.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__("", f"service {name}", reason)
        self.service = name


def is_configured(config: Config, name: str) -> bool:
    """A service runs only when its section lists at least one address (the
    queue, which listens nowhere: when ``[outbound] enabled``)."""
    if name == "queue":
        return config.outbound.enabled
    section = getattr(config, name)
    return bool(getattr(section, "listen", ()) or getattr(section, "tls_listen", ()))


def load_service(name: str) -> ServeFunction:
    """Import the service's serve function; ServiceUnavailable when its module
    does not exist.  Any other import error is a bug and propagates."""
    if name not in SERVICES:
        raise ServiceUnavailable(name, f"unknown service; choose from {', '.join(SERVICES)}")
    module_name, _, function_name = SERVICES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        raise ServiceUnavailable(
            name, f"not available in this build ({module_name} missing)"
        ) from None
    serve: ServeFunction | None = getattr(module, function_name, None)
    if serve is None:
        raise ServiceUnavailable(name, f"{module_name} has no {function_name}()")
    return serve


def available_services() -> list[str]:
    """Services whose modules exist in this build."""
    names = []
    for name in SERVICES:
        try:
            load_service(name)
        except ServiceUnavailable:
            continue
        names.append(name)
    return names


def select_services(config: Config, names: Sequence[str]) -> list[tuple[str, ServeFunction]]:
    """The services to start: those named (each must exist and be configured),
    or with no names every configured service whose module exists."""
    if names:
        chosen = []
        for name in dict.fromkeys(names):
            serve = load_service(name)
            if name == "queue" and not config.outbound.enabled:
                raise ConfigError(config.source, "outbound.enabled", "the queue is not enabled")
            if not is_configured(config, name):
                raise ConfigError(
                    config.source, f"{name}.listen", "no listen or tls_listen address configured"
                )
            chosen.append((name, serve))
        return chosen
    chosen = []
    for name in SERVICES:
        if not is_configured(config, name):
            continue
        try:
            chosen.append((name, load_service(name)))
        except ServiceUnavailable as exc:
            logger.warning("%s is configured but not started: %s", name, exc.problem)
    if not chosen:
        raise ConfigError(config.source, "", "no service configured (set listen in [smtp], ...)")
    return chosen


async def _watchdog(interval: float) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await trio.sleep(interval)


def _reload_settings(running: Config) -> Config:
    """Re-read the config file on SIGHUP: the log level applies at once; other
    changes are named, since listeners, limits and the store were built from
    the settings at start.  Returns the settings now in effect."""
    # Only a config that came from a file can be re-read (not the built-in
    # defaults, not `mailstack dev`).
    if not os.path.isfile(running.source):
        return running
    try:
        new = load_config(running.source)
    except ConfigError as exc:
        logger.error("SIGHUP: keeping the running settings: %s", exc)
        return running
    if new.logging.level != running.logging.level:
        logging.getLogger("mailstack").setLevel(new.logging.level.upper())
        logger.info("SIGHUP: log level is now %s", new.logging.level)
    top_level = ("hostname", "data_dir")
    changed = [key for key in top_level if getattr(new, key) != getattr(running, key)]
    changed += [
        name
        for name in SECTIONS
        if name != "logging" and getattr(new, name) != getattr(running, name)
    ]
    if changed:
        logger.warning("SIGHUP: changes to %s take effect at the next restart", ", ".join(changed))
    return running.replace(logging=new.logging)


async def _handle_signals(
    signals: AsyncIterator[int],
    ctx: ServiceContext,
    stop: trio.Event,
    force: trio.CancelScope,
) -> None:
    config = ctx.config
    async for signum in signals:
        if signum == signal.SIGHUP:
            logger.info("SIGHUP: reloading TLS certificate and settings")
            for provider in [ctx.tls, *ctx.other_tls]:
                await trio.to_thread.run_sync(provider.reload)
            config = await trio.to_thread.run_sync(_reload_settings, config)
        elif stop.is_set():
            logger.warning("%s again: stopping now", signal.Signals(signum).name)
            force.cancel()
        else:
            logger.info("%s: stopping", signal.Signals(signum).name)
            stop.set()


async def run(
    config: Config,
    names: Sequence[str] = (),
    *,
    store: Store | None = None,
    handle_signals: bool = True,
    grace_seconds: float | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until stopped by a signal, by ``stop.set()``, or by cancellation.

    ``store``: an already open store to use (and leave open), as the
    integration tests do; by default run opens and closes its own.
    ``handle_signals=False`` leaves the process's signal handling alone
    (it needs the main thread).  ``grace_seconds`` overrides ``[service]
    shutdown_grace_seconds``.  Returns after a graceful stop.
    """
    if grace_seconds is None:
        grace_seconds = config.service.shutdown_grace_seconds
    selected = select_services(config, names)
    with contextlib.ExitStack() as signal_stack:
        signals: AsyncIterator[int] | None = None
        if handle_signals:
            # Opened first, before the certificate and the database are
            # loaded and any listener is bound: a Ctrl-C or SIGTERM during
            # start-up is queued and then stops the services gracefully,
            # instead of a KeyboardInterrupt landing wherever the interpreter
            # happens to be (a garbage-collector callback swallows it).
            signals = signal_stack.enter_context(
                trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
            )
        await _open_and_serve(
            config,
            selected,
            store,
            signals,
            grace_seconds,
            stop if stop is not None else trio.Event(),
            task_status,
        )


async def _open_and_serve(
    config: Config,
    selected: list[tuple[str, ServeFunction]],
    store: Store | None,
    signals: AsyncIterator[int] | None,
    grace_seconds: float,
    stop: trio.Event,
    task_status: trio.TaskStatus[list[net.Bound]],
) -> None:
    tls = await trio.to_thread.run_sync(TlsProvider, config)
    own_store = store is None
    if store is None:
        store = await Store.open(config)
    drain = net.Drain()
    # Child tasks inherit the context: every serve_endpoints below registers
    # its listeners with this drain.
    drain_token = net.current_drain.set(drain)
    try:
        ctx = ServiceContext(config, store, Authenticator(config, store), tls)
        async with trio.open_nursery() as store_nursery:
            if not store.running:
                # Group commit ("250 after DATA" shares one fsync) for every
                # service, and the change watcher where a service follows
                # changes; they stop once the services have drained.
                watch = any(name in SUBSCRIBING_SERVICES for name, _ in selected)
                await store_nursery.start(partial(store.run, watch_changes=watch))
            await _serve_until_stopped(
                ctx, selected, signals, stop, drain, grace_seconds, task_status
            )
            store_nursery.cancel_scope.cancel()
        logger.info("stopped")
    finally:
        net.current_drain.reset(drain_token)
        if own_store:
            with trio.CancelScope(shield=True):
                await store.aclose()


async def _serve_until_stopped(
    ctx: ServiceContext,
    selected: list[tuple[str, ServeFunction]],
    signals: AsyncIterator[int] | None,
    stop: trio.Event,
    drain: net.Drain,
    grace_seconds: float,
    task_status: trio.TaskStatus[list[net.Bound]],
) -> None:
    async with trio.open_nursery() as helpers:
        with trio.CancelScope() as services_scope:
            if signals is not None:
                helpers.start_soon(_handle_signals, signals, ctx, stop, services_scope)
            async with trio.open_nursery() as services:
                bound: list[net.Bound] = []
                for name, serve in selected:
                    logger.debug("starting %s", name)
                    bound += await services.start(serve, ctx)
                for listener in bound:
                    logger.info("listening: %s", listener)
                task_status.started(bound)
                names_text = ", ".join(name for name, _ in selected)
                systemd.notify("READY=1", f"STATUS=serving {names_text}")
                interval = systemd.watchdog_interval()
                if interval is not None:
                    helpers.start_soon(_watchdog, interval)
                await stop.wait()
                systemd.notify("STOPPING=1", "STATUS=stopping")
                logger.info(
                    "stopping: listeners closed, sessions get %.0f s to finish", grace_seconds
                )
                drain.close_listeners()
                ctx.shutdown.begin()
                services_scope.deadline = trio.current_time() + grace_seconds
                # Leaving this block waits for the services: each returns once
                # its sessions are over, or is cancelled at the deadline.
        if services_scope.cancelled_caught:
            logger.info("grace period over: remaining sessions cancelled")
        helpers.cancel_scope.cancel()


def raise_open_files_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit (an unprivileged process
    may; systemd's LimitNOFILE sets both) so each connection's socket fits:
    10,000 IMAP IDLE sessions need more than the usual soft limit of 1024.
    Returns the soft limit now in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        logger.warning("cannot raise the open files limit from %d: %s", soft, exc)
        return soft
    logger.info("open files limit raised from %d to %d", soft, wanted)
    return wanted


def main_serve(config: Config, names: Sequence[str], *, ready_text: str = "") -> int:
    """``mailstack serve``: set up logging, run, print each bound listener
    and then ``ready_text`` (``mailstack dev``'s banner: printed once the
    settings it shows work, and Ctrl-C stops gracefully from then on).

    Errors (ConfigError, StoreError, bind failures) propagate for the CLI to
    turn into its one-line message and exit status.
    """
    setup_logging(config.logging)
    raise_open_files_limit()

    async def serve_and_report() -> None:
        async with trio.open_nursery() as nursery:
            bound: list[net.Bound] = await nursery.start(partial(run, config, names))
            gc_tuning.settle_after_startup()
            for listener in bound:
                print(f"listening: {listener}", flush=True)
            if ready_text:
                print(ready_text, flush=True)

    trio.run(serve_and_report)
    return 0
