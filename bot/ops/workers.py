"""Worker child processes of the one command (`slack-assistant`, `WORKER_PROCESSES` of them): the process
that takes Slack's requests only acks and queues, so no turn ever sits between a request and its ack, and
its children (`slack-assistant worker`) run the turns.

The children share the parent's stderr (one log), are stopped with it (SIGTERM; they finish their turns
for SHUTDOWN_GRACE_SECONDS as any worker does) and restarted when one dies. They never outlive it: each
holds the read end of a pipe whose write end only the parent has; when the parent is gone, however it
went (SIGKILL, OOM), the pipe reads EOF and the child stops as on SIGTERM (`watch_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# The environment variable that hands a child the read end of its parent's pipe.
PARENT_FD_VAR = "SLACK_ASSISTANT_PARENT_FD"
# A child that keeps dying is restarted after 1 s, then 2, 4 … up to this; one that ran a minute starts over.
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
# Past its grace a child is killed (its turns stay queued and are reclaimed, as for any dead worker).
KILL_MARGIN_SECONDS = 10.0
# Workers run at a lower priority than the process that acks: when the cores are short, acks go first
# (Slack retries an event not acked in 3 s; a turn a few milliseconds later is not noticed).
WORKER_NICENESS = 5


class WorkerChildren:
    """`count` child processes running `python -m handlers.cli worker`, kept alive until `stop()`."""

    def __init__(self, count: int, env: dict[str, str], *, grace_seconds: float) -> None:
        self._count = count
        self._env = env
        self._grace = grace_seconds
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._keepers: list[asyncio.Task[None]] = []
        self._stopping = False
        # The children hold the read end; only this process holds the write end (not inherited by them).
        self._read_fd, self._write_fd = os.pipe()
        self.started = 0  # children started so far, restarts included

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.returncode is None]

    async def start(self) -> None:
        for n in range(self._count):
            await self._spawn(n)
            self._keepers.append(asyncio.create_task(self._keep(n), name=f"worker child {n}"))

    async def _spawn(self, n: int) -> None:
        env = {**self._env, PARENT_FD_VAR: str(self._read_fd)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "handlers.cli",
            "worker",
            env=env,
            pass_fds=(self._read_fd,),
            # stdin from nowhere; stdout and stderr are this process's: one log.
            stdin=asyncio.subprocess.DEVNULL,
        )
        self._procs[n] = proc
        self.started += 1
        log.info("worker process %d started (pid %d)", n, proc.pid)

    async def _keep(self, n: int) -> None:
        """Restart child `n` whenever it exits, until `stop()`."""
        delay = 1.0
        while True:
            began = time.monotonic()
            code = await self._procs[n].wait()
            if self._stopping:
                return
            if time.monotonic() - began > STABLE_SECONDS:
                delay = 1.0
            log.warning("worker process %d exited (code %s); restarting it in %.0fs", n, code, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            delay = min(RESTART_MAX_SECONDS, delay * 2)
            try:
                await self._spawn(n)
            except OSError as exc:
                log.error("worker process %d could not start (%s)", n, type(exc).__name__)

    async def stop(self) -> None:
        """SIGTERM every child and wait for them (their grace, then a margin; past it, SIGKILL)."""
        self._stopping = True
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        running = [p for p in self._procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if running:
            waits = [asyncio.ensure_future(p.wait()) for p in running]
            _, late = await asyncio.wait(waits, timeout=self._grace + KILL_MARGIN_SECONDS)
            for proc in running:
                if proc.returncode is None:
                    log.warning("worker process %d did not stop in time; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        log.info("worker processes stopped")


def is_worker_child() -> bool:
    """Whether this process is a worker child of the one command."""
    return os.environ.get(PARENT_FD_VAR, "").isdigit()


def lower_priority() -> None:
    """In a worker child: step behind the parent for CPU (raising one's own niceness needs no privilege;
    done here rather than before exec, which is unsafe in a process with threads)."""
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def watch_parent(on_gone: Callable[[], None]) -> bool:
    """In a worker child: call `on_gone` once the parent process is gone (its pipe reads EOF). False when
    this process is no child of the one command (nothing to watch)."""
    if not is_worker_child():
        return False
    fd = int(os.environ[PARENT_FD_VAR])
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # nobody writes to it; ignore
        loop.remove_reader(fd)
        log.warning("the parent process is gone; stopping")
        on_gone()

    try:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
    except OSError:
        return False
    return True
