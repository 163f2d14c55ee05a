"""Context at rest: encrypted in Redis, readable with rotated keys, plain records still read unless
BRIDGE_STORE_REQUIRE_ENCRYPTION is on (then a record planted in Redis without the key is not there)."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis.asyncio as aioredis
from mcp import Client
from mcp.shared.exceptions import MCPError

from bridge.config import ConfigError, load_settings
from bridge.store.records import ConversationRecord, UploadRecord, new_handle, new_upload_id
from bridge.store.redis import RedisStore
from bridge.store.sealing import Sealer, new_store_key
from tests.helpers import text_of
from tests.procs import Proc, bridge_env, running, start_bridge


def record(owner: str = "alice") -> ConversationRecord:
    now = time.time()
    return ConversationRecord(
        handle=new_handle(),
        owner=owner,
        dust_conversation_id="cOnV123456",
        agent_id="echo000001",
        agent_name="echo",
        last_agent_message_id="mSg1234567",
        url="https://dust.tt/w/x/assistant/cOnV123456",
        created_at=now,
        last_used_at=now,
        turns=1,
    )


def upload_record(owner: str = "alice") -> UploadRecord:
    return UploadRecord(
        upload_id=new_upload_id(),
        owner=owner,
        filename="secret-plan.pdf",
        size=1,
        sha256="0" * 64,
        mime="application/pdf",
        scan="clean",
        dust_file_id="fil_x",
        created_at=time.time(),
        expires_at=time.time() + 60,
    )


async def test_records_are_encrypted_in_redis_and_keys_rotate(redis_url: str) -> None:
    old_key, new_key = new_store_key(), new_store_key()
    raw = aioredis.from_url(redis_url, decode_responses=True)
    before = RedisStore.from_url(redis_url, 3600, sealer=Sealer([old_key]))
    saved = record()
    await before.save(saved)
    upload = upload_record()
    await before.put_upload(upload)
    stored = await raw.get(f"dmb:conv:{saved.handle}")
    assert stored.startswith("enc1:") and "cOnV123456" not in stored
    assert "secret-plan" not in await raw.get(f"dmb:upload:{upload.upload_id}")
    # Rotation: the new key writes, the old one still reads what it wrote.
    after = RedisStore.from_url(redis_url, 3600, sealer=Sealer([new_key, old_key]))
    assert await after.load(saved.handle, "alice") == saved
    assert await after.get_upload(upload.upload_id, "alice") == upload
    # Without the old key, old records are simply unreadable (treated as gone), never an error.
    only_new = RedisStore.from_url(redis_url, 3600, sealer=Sealer([new_key]))
    assert await only_new.load(saved.handle, "alice") is None
    # Records written before encryption was enabled are still read.
    plain = RedisStore.from_url(redis_url, 3600)
    legacy = record()
    await plain.save(legacy)
    assert await only_new.load(legacy.handle, "alice") == legacy
    for store in (before, after, only_new, plain):
        await store.aclose()
    await raw.aclose()


@pytest.mark.parametrize("value", ["not-a-key", "short,keys", new_store_key() + ",x"])
def test_a_bad_store_key_is_a_one_line_error_without_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BRIDGE_STORE_ENCRYPTION_KEY", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "BRIDGE_STORE_ENCRYPTION_KEY: each key must be 32 url-safe base64-encoded bytes" in str(info.value)
    assert value not in str(info.value)


def test_required_sealing_reads_plain_values_as_absent() -> None:
    key = new_store_key()
    lenient, strict = Sealer([key]), Sealer([key], require_sealed=True)
    sealed = lenient.seal('{"a": 1}')
    assert strict.open(sealed) == lenient.open(sealed) == '{"a": 1}'
    assert lenient.open('{"a": 1}') == '{"a": 1}'  # the default: rotation-in still reads old records
    assert strict.open('{"a": 1}') is None
    assert strict.open(None) is None


async def test_with_encryption_required_records_planted_in_redis_read_as_missing(
    simulator: Proc, redis_server: Proc, redis_url: str
) -> None:
    key = new_store_key()
    env = bridge_env(
        simulator,
        redis_server.port,
        BRIDGE_SCAN_MODE="off",
        BRIDGE_STORE_ENCRYPTION_KEY=key,
        BRIDGE_STORE_REQUIRE_ENCRYPTION="true",
    )
    keyed = RedisStore.from_url(redis_url, 3600, sealer=Sealer([key]))
    # Someone who can write to Redis but holds no key: plain JSON, like records from before encryption.
    planter = RedisStore.from_url(redis_url, 3600)
    with running(start_bridge(env)) as bridge:
        async with Client(f"{bridge.url}/mcp") as client:
            first = await client.call_tool("ask_agent", {"agent": "echo", "message": "genuine"})
            handle = (first.structured_content or {})["conversation"]
            genuine = await keyed.load(handle, "local")
            assert genuine is not None
            planted = dataclasses.replace(genuine, handle=new_handle())
            await planter.save(planted)
            fake_upload = upload_record("local")
            await planter.put_upload(fake_upload)
            own = await client.call_tool("get_conversation", {"conversation": handle})
            peek = await client.call_tool("get_conversation", {"conversation": planted.handle})
            reuse = await client.call_tool(
                "ask_agent", {"agent": "echo", "message": "x", "conversation": planted.handle}
            )
            listed = {str(r.uri) for r in (await client.list_resources()).resources}
            with pytest.raises(MCPError) as upload_read:
                await client.read_resource(fake_upload.uri)
    for store in (keyed, planter):
        await store.aclose()
    assert not own.is_error
    assert peek.is_error and "unknown or expired conversation handle" in text_of(peek)
    assert reuse.is_error and "unknown or expired conversation handle" in text_of(reuse)
    assert f"dust://conversations/{handle}" in listed
    assert f"dust://conversations/{planted.handle}" not in listed and fake_upload.uri not in listed
    assert "unknown or expired upload" in upload_read.value.error.message


def test_requiring_encryption_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_STORE_REQUIRE_ENCRYPTION", "true")
    with pytest.raises(
        ConfigError, match="BRIDGE_STORE_REQUIRE_ENCRYPTION: needs BRIDGE_STORE_ENCRYPTION_KEY"
    ):
        load_settings()
    monkeypatch.setenv("BRIDGE_STORE_ENCRYPTION_KEY", new_store_key())
    assert load_settings().store_require_encryption
    monkeypatch.delenv("BRIDGE_STORE_REQUIRE_ENCRYPTION")
    assert not load_settings().store_require_encryption  # off by default, for rotating encryption in
