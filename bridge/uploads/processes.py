"""Whose is it: the process that wrote an upload temp file or a pending marker, and whether it runs.

Temp files carry their writer's pid in their name (temp_files.py), pending markers carry the pid
and host of the process that made them (reconcile.py). A pid means something only where it was
taken: on this host, in this PID namespace.
"""

from __future__ import annotations

import os
import socket


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
