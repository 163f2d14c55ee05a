"""Records and their ids (bridge/store/records.py): handles and upload ids are unguessable and
checked; the stored JSON is what earlier versions wrote, so their records still load."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from bridge.store.records import (
    CONVERSATIONS,
    HANDLE_PREFIX,
    PENDING,
    UPLOADS,
    Codec,
    is_valid_handle,
    is_valid_upload_id,
    new_handle,
    new_upload_id,
)
from tests.store.support import (
    CONVERSATION,
    PENDING_UPLOAD,
    STORED_CONVERSATION,
    STORED_CONVERSATION_NOW,
    STORED_PENDING,
    STORED_UPLOAD,
    UPLOAD,
    make_record,
    make_upload,
)

# --- handles -------------------------------------------------------------------------------------


def test_handles_are_unique_and_well_formed() -> None:
    handles = {new_handle() for _ in range(2000)}
    assert len(handles) == 2000
    for handle in handles:
        assert handle.startswith(HANDLE_PREFIX)
        assert is_valid_handle(handle)
        token = handle.removeprefix(HANDLE_PREFIX)
        assert len(base64.urlsafe_b64decode(token)) * 8 >= 128


GOOD = "dmc_" + "A" * 16 + "z09_-" + "b" * 11


@pytest.mark.parametrize(
    "value",
    [
        "",
        "dmc_",
        GOOD[:-1],  # one character short
        GOOD + "A",  # one character long
        "DMC_" + GOOD[4:],
        "dmb_" + GOOD[4:],
        "dmc-" + GOOD[4:],
        GOOD[4:],  # no prefix
        GOOD[:-1] + "+",  # standard base64, not base64url
        GOOD[:-1] + "/",
        GOOD[:-1] + "=",
        GOOD[:-1] + "é",
        GOOD[:-1] + "٣",  # a non-ASCII digit
        GOOD + "\n",
        " " + GOOD,
        "dmb:conv:" + GOOD,
    ],
)
def test_is_valid_handle_rejects_near_misses(value: str) -> None:
    assert is_valid_handle(GOOD)
    assert not is_valid_handle(value)


async def test_upload_ids_are_unguessable_and_checked() -> None:
    ids = {new_upload_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_upload_id(i) for i in ids)
    sample = next(iter(ids))
    assert not is_valid_upload_id(sample[:-1])
    assert not is_valid_upload_id(sample + "x")
    assert not is_valid_upload_id("dmc_" + sample[4:])


# --- the stored JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "stored", "written", "record", "key"),
    [
        (CONVERSATIONS, STORED_CONVERSATION, STORED_CONVERSATION_NOW, CONVERSATION, CONVERSATION.handle),
        (UPLOADS, STORED_UPLOAD, STORED_UPLOAD, UPLOAD, UPLOAD.upload_id),
        (PENDING, STORED_PENDING, STORED_PENDING, PENDING_UPLOAD, PENDING_UPLOAD.upload_id),
    ],
)
def test_records_are_stored_as_before_and_earlier_records_load(
    codec: Codec[Any], stored: str, written: str, record: object, key: str
) -> None:
    assert codec.decode(stored, key) == record
    # Byte for byte what older replicas read: the old fields as before, new ones only appended.
    assert codec.encode(record) == written and written.startswith(stored[:-1])


def test_a_newer_replica_may_add_fields() -> None:
    extended = STORED_CONVERSATION[:-1] + ',"added_later":true}'
    assert CONVERSATIONS.decode(extended, CONVERSATION.handle) == CONVERSATION


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "{not json",
        "[]",
        STORED_CONVERSATION.replace('"turns":3', '"turns":"3"'),  # strict: no coercion
        STORED_CONVERSATION.replace(',"turns":3', ""),  # a field missing
        STORED_CONVERSATION.replace('"owner":"alice"', '"owner":null'),
    ],
)
def test_damaged_values_decode_as_missing(stored: str | None) -> None:
    assert CONVERSATIONS.decode(stored, CONVERSATION.handle) is None


def test_a_record_filed_under_another_key_decodes_as_missing() -> None:
    assert CONVERSATIONS.decode(STORED_CONVERSATION, new_handle()) is None
    assert UPLOADS.decode(STORED_UPLOAD, new_upload_id()) is None
    assert PENDING.decode(STORED_PENDING, UPLOAD.upload_id) is None
    assert UPLOADS.decode(STORED_PENDING, PENDING_UPLOAD.upload_id) is None  # another kind of record


def test_round_trips_keep_every_field() -> None:
    record = make_record(last_agent_message_id=None, url=None)
    assert CONVERSATIONS.decode(CONVERSATIONS.encode(record), record.handle) == record
    upload = make_upload()
    assert UPLOADS.decode(UPLOADS.encode(upload), upload.upload_id) == upload
    marker = dataclasses.replace(PENDING_UPLOAD, dust_file_id="fil_1")
    assert PENDING.decode(PENDING.encode(marker), marker.upload_id) == marker
