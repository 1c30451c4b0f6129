"""Pid files name the process they were written for, not whatever process holds the number later."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from deploy import processes


def test_a_pid_file_names_its_process_and_not_a_process_that_reused_the_number(tmp_path: Path) -> None:
    """After a crash or a reboot, a pid file's number may belong to another process: `rtrec down` sent it
    SIGTERM, then SIGKILL."""
    pid_path = tmp_path / "x.pid"
    child = processes.spawn(
        [sys.executable, "-c", "import time; time.sleep(30)"], log_path=tmp_path / "x.log", pid_path=pid_path
    )
    try:
        assert processes.read_pid(pid_path) == child and processes.is_alive(child)
        # the same number recorded with another start time: the process that has it now is not ours
        pid, started = pid_path.read_text().split()
        pid_path.write_text(f"{pid} {int(started) - 1}")
        assert processes.read_pid(pid_path) is None
        assert processes.stop(pid_path) is False and processes.is_alive(child)  # nothing was signalled
        # this very test process, as if its number were in a stale file of a process long gone
        pid_path.write_text(f"{os.getpid()} 1")
        assert processes.read_pid(pid_path) is None
        pid_path.write_text(str(child))  # a file written before start times were recorded still works
        assert processes.read_pid(pid_path) == child
    finally:
        os.kill(child, signal.SIGKILL)
