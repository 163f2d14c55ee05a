"""Context at rest: encrypted in Redis, readable with rotated keys, plain records still read."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from bridge.config import ConfigError, load_settings
from bridge.security.sealing import Sealer, new_store_key
from bridge.store import ConversationRecord, RedisStore, UploadRecord, new_handle, new_upload_id


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


async def test_records_are_encrypted_in_redis_and_keys_rotate(redis_url: str) -> None:
    old_key, new_key = new_store_key(), new_store_key()
    raw = aioredis.from_url(redis_url, decode_responses=True)
    before = RedisStore.from_url(redis_url, 3600, sealer=Sealer([old_key]))
    saved = record()
    await before.save(saved)
    upload = UploadRecord(
        upload_id=new_upload_id(),
        owner="alice",
        filename="secret-plan.pdf",
        size=1,
        sha256="0" * 64,
        mime="application/pdf",
        scan="clean",
        dust_file_id="fil_x",
        created_at=time.time(),
        expires_at=time.time() + 60,
    )
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
