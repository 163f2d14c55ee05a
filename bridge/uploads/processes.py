"""Whose is it: the process that wrote an upload temp file or a pending marker, and whether it runs.

Temp files carry their writer's pid in their name (temp_files.py), pending markers carry the pid
and host of the process that made them (reconcile.py). A pid means something only where it was
taken: on this host, in this PID namespace.
"""

from __future__ import annotations

import os
import socket
import sys


def process_host() -> str:
    """This host's name plus its PID namespace: where a pid in a pending marker can be checked."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    host = socket.gethostname()
    return f"{host}/{namespace}" if namespace else host


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one we may not signal counts as running)."""
    if sys.platform == "win32":
        # Never os.kill there: on Windows it terminates the process, whatever the signal number.
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    """OpenProcess + GetExitCodeProcess: alive while the exit code is STILL_ACTIVE (259); a process
    we may not open (access denied) counts as running, as on POSIX."""
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return bool(ctypes.get_last_error() == 5)  # type: ignore[attr-defined,unused-ignore]
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
    finally:
        kernel32.CloseHandle(handle)
