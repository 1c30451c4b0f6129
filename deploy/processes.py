"""Background processes of the local stack: start with a pid file and a log, check, stop (safe twice)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ProcessError(RuntimeError):
    """A local process did not start or did not become ready in time."""


def spawn(
    cmd: Sequence[str], *, log_path: Path, pid_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start ``cmd`` detached (own session, so Ctrl-C of the caller does not kill it); returns its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - commands are built by the project, not from user input
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    write_pid(pid_path, proc.pid)
    return proc.pid


def write_pid(pid_path: Path, pid: int) -> None:
    """The pid and the process's start time: a pid file that outlived its process (a crash, a reboot) must not
    name whatever process got the number since, which `rtrec down` would kill."""
    started = start_time(pid)
    pid_path.write_text(f"{pid} {started}" if started is not None else str(pid))


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (``/proc/<pid>/stat`` field 22); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


def read_pid(pid_path: Path) -> int | None:
    """The pid of a pid file, or None when there is none or it names another process now (its start time
    differs from the one recorded)."""
    try:
        words = pid_path.read_text().split()
        pid = int(words[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if len(words) > 1 and words[1].isdigit():
        now = start_time(pid)
        if now is not None and now != int(words[1]):
            return None  # the number was reused
        if now is None and Path("/proc/self/stat").exists():
            return None  # no such process any more
    return pid


def is_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def stop(pid_path: Path, *, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Signal the process of ``pid_path``, wait, SIGKILL after ``timeout``. Returns True if one was running."""
    pid = read_pid(pid_path)
    if not is_alive(pid):
        pid_path.unlink(missing_ok=True)
        return False
    assert pid is not None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while is_alive(pid):
            time.sleep(0.05)
    pid_path.unlink(missing_ok=True)
    return True


def free_port_block(size: int, host: str = "127.0.0.1") -> int:
    """A base port with ``size`` consecutive ports after it that the OS lets us bind now (private clusters of
    tests and benchmarks; the OS's own ephemeral range is avoided so its picks do not collide with ours)."""
    rng = random.SystemRandom()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - size)
        if all(_bindable(host, base + i) for i in range(size)):
            return base
    raise ProcessError(f"no block of {size} free ports")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_port(host: str, port: int, timeout: float, *, pid_path: Path | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if pid_path is not None and not is_alive(read_pid(pid_path)):
            raise ProcessError(f"{what or 'process'} exited before listening on {host}:{port}")
        time.sleep(0.1)
    raise ProcessError(f"{what or 'process'} did not listen on {host}:{port} within {timeout:.0f}s")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class ProcessHandle:
    """A child process of a benchmark: started with a log (or captured stdout), stopped gently, and asked for
    the CPU time it used (user + system, from the kernel's accounting when it is reaped)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.cpu_at_exit = 0.0

    @classmethod
    def spawn(
        cls, cmd: Sequence[str], log_path: Path, env: Mapping[str, str], *, capture: bool = False
    ) -> ProcessHandle:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(  # noqa: S603 - the project's own commands
                list(cmd),
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=dict(env),
            )
        return cls(popen)

    def wait_output(self, timeout: float) -> str:
        """Wait for a captured process to end; its standard output."""
        assert self.popen.stdout is not None
        out = self.popen.stdout.read()
        self._reap(timeout)
        return out.decode()

    def _reap(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.cpu_at_exit = usage.ru_utime + usage.ru_stime
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                return
            time.sleep(0.02)
        raise ProcessError(f"process {self.pid} did not exit in {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen.returncode is not None:
            return
        try:
            self.popen.send_signal(signal.SIGTERM)
            self._reap(timeout)
        except (ProcessError, ChildProcessError):
            self.popen.kill()
            self.popen.wait()
