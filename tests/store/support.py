"""What the store tests share: records to save, TTLs, a clock moved by hand, counts of connections."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.store.base import ContextStore
from bridge.store.pool import CLIENT_NAME
from bridge.store.records import ConversationRecord, PendingUpload, UploadRecord, new_handle, new_upload_id

LONG_TTL = 3600
# The password of the Sentinel setup's master (tests/store/conftest.py).
PASSWORD = "sentinel-and-master-pw"
SHORT_TTL = 2  # seconds; Redis TTLs are whole seconds


def make_record(
    owner: str = "alice", last_used_at: float = 1_700_000_000.0, **changes: object
) -> ConversationRecord:
    record = ConversationRecord(
        handle=new_handle(),
        owner=owner,
        dust_conversation_id="conv_" + new_handle()[-8:],
        agent_id="agent_sid",
        agent_name="helper",
        last_agent_message_id=None,
        url=None,
        created_at=1_700_000_000.0,
        last_used_at=last_used_at,
        turns=1,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def make_upload(owner: str = "alice", *, ttl: float = 60.0, created: float | None = None) -> UploadRecord:
    now = time.time() if created is None else created
    return UploadRecord(
        upload_id=new_upload_id(),
        owner=owner,
        filename="report.pdf",
        size=1234,
        sha256="0" * 64,
        mime="application/pdf",
        scan="clean",
        dust_file_id="fil_abc",
        created_at=now,
        expires_at=now + ttl,
        pages=3,
    )


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """A store plus a way to let time pass for it (a fake clock for memory, real time for Redis)."""

    store: ContextStore
    advance: Callable[[float], Awaitable[None]]


StoreFactory = Callable[[int], Harness]


# Records as the bridge stored them before the store was split into modules (the JSON written by
# bridge/store/records.py at commit 4f621da), with the records they stand for. Replicas and restarts
# share this format: a stored record must keep loading, whatever the code around it becomes.
STORED_CONVERSATION = (
    '{"handle":"dmc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","owner":"alice","dust_conversation_id":"cOnV123456",'
    '"agent_id":"echo000001","agent_name":"echo","last_agent_message_id":"mSg1234567",'
    '"url":"https://dust.tt/w/x/assistant/cOnV123456","created_at":1700000000.5,"last_used_at":1700000100.25,'
    '"turns":3}'
)
# The same record as written since the fields of unfinished answers were added (stream position,
# pending actions, generated files): only appended, with defaults, so older replicas still read it.
STORED_CONVERSATION_NOW = STORED_CONVERSATION[:-1] + ',"stream_position":null,"pending":[],"files":[]}'
CONVERSATION = ConversationRecord(
    handle="dmc_" + "A" * 32,
    owner="alice",
    dust_conversation_id="cOnV123456",
    agent_id="echo000001",
    agent_name="echo",
    last_agent_message_id="mSg1234567",
    url="https://dust.tt/w/x/assistant/cOnV123456",
    created_at=1700000000.5,
    last_used_at=1700000100.25,
    turns=3,
)
STORED_UPLOAD = (
    '{"upload_id":"upl_BBBBBBBBBBBBBBBBBBBBBB","owner":"alice","filename":"plan.pdf","size":12,'
    '"sha256":"0000000000000000000000000000000000000000000000000000000000000000","mime":"application/pdf",'
    '"scan":"clean","dust_file_id":"fil_x","created_at":1700000000.0,"expires_at":4102444800.0,"pages":2,'
    '"width":null,"height":null}'
)
UPLOAD = UploadRecord(
    upload_id="upl_" + "B" * 22,
    owner="alice",
    filename="plan.pdf",
    size=12,
    sha256="0" * 64,
    mime="application/pdf",
    scan="clean",
    dust_file_id="fil_x",
    created_at=1700000000.0,
    expires_at=4102444800.0,  # 2100: still live when the test runs
    pages=2,
)
STORED_PENDING = (
    '{"upload_id":"upl_CCCCCCCCCCCCCCCCCCCCCC","owner":"alice","started_at":1700000000.0,"host":"h1","pid":42,'
    '"instance":"abc","dust_file_id":null}'
)
PENDING_UPLOAD = PendingUpload(
    upload_id="upl_" + "C" * 22, owner="alice", started_at=1700000000.0, host="h1", pid=42, instance="abc"
)


# --- counting connections to Redis ---------------------------------------------------------------


@dataclass(frozen=True)
class Sockets:
    """This process's TCP sockets to one port, as the kernel sees them."""

    open: int  # every state but LISTEN
    close_wait: int  # the peer closed, nobody here did


def sockets_to(port: int) -> Sockets:
    """Count this process's sockets whose peer is `port` (/proc: nothing the pool says about itself)."""
    peers: dict[str, tuple[int, str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                peers[fields[9]] = (int(fields[2].rsplit(":", 1)[1], 16), fields[3])
    total = close_wait = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            peer = peers.get(target[len("socket:[") : -1]) if target.startswith("socket:[") else None
            if peer is not None and peer[0] == port and peer[1] != "0A":
                total += 1
                close_wait += peer[1] == "08"
    return Sockets(total, close_wait)


def _command(*words: str) -> bytes:
    return f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words)


def bridge_clients(port: int, password: str | None = None, name: str = CLIENT_NAME) -> int:
    """How many connections the Redis on `port` has from the bridge (they name themselves)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock, sock.makefile("rb") as replies:
        if password is not None:
            sock.sendall(_command("AUTH", password))
            assert replies.readline().startswith(b"+OK")
        sock.sendall(_command("CLIENT", "LIST"))
        size = int(replies.readline()[1:])  # a bulk string: $<bytes>
        listing = replies.read(size)
    return listing.count(f" name={name} ".encode())


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll `check` until it holds (or fail after `timeout`); the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started
