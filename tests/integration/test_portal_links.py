"""POST /v1/portal-links: a short-lived URL to a portal reaching some of the account's callbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from yarl import URL

from tests.conftest import make_key


async def _callback(api, name: str) -> str:
    status, cb = await api.post("/v1/callbacks", {"name": name, "url": "http://127.0.0.1:9/h"})
    assert status == 201, cb
    return cb["callbackId"]


async def test_a_portal_link_names_its_callbacks_and_expires(api, database):
    a = await _callback(api, "a")
    status, link = await api.post("/v1/portal-links", {"callbackIds": [a], "expiresIn": 600})
    assert status == 201, link
    url = URL(link["url"])
    assert url.path.startswith("/portal/") and url.path.endswith("/callbacks") and link["callbackIds"] == [a]
    expires = datetime.fromisoformat(link["expiresAt"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)
    token = url.path.split("/")[2]
    assert len(token) >= 43
    row = await database.pool.fetchrow("SELECT kind, callback_ids, key_id, token_hash FROM console_sessions")
    assert (row["kind"], row["callback_ids"], row["key_id"]) == ("portal", [int(a[3:])], None)
    assert token.encode() not in row["token_hash"]  # only the hash is kept


async def test_a_link_for_all_callbacks_reaches_every_one(api, database):
    status, link = await api.post("/v1/portal-links", {"all": True})
    assert status == 201 and link["callbackIds"] is None
    assert await database.pool.fetchval("SELECT callback_ids IS NULL FROM console_sessions")
    expires = datetime.fromisoformat(link["expiresAt"]) - datetime.now(UTC)
    assert timedelta(minutes=59) < expires <= timedelta(hours=1)  # the default


async def test_a_link_names_its_callbacks_or_all_of_them_not_both(api):
    a = await _callback(api, "a")
    for body, field in (
        ({}, "callbackIds"),
        ({"all": True, "callbackIds": [a]}, "callbackIds"),
        ({"all": False}, "all"),
    ):
        status, err = await api.post("/v1/portal-links", body)
        assert (status, err["error"]["field"]) == (400, field), (body, err)


async def test_a_link_cannot_name_another_accounts_callback(api, other_api, database):
    theirs = await _callback(other_api, "theirs")
    status, err = await api.post("/v1/portal-links", {"callbackIds": [theirs]})
    assert status == 404 and theirs in err["error"]["message"]
    status, err = await api.post("/v1/portal-links", {"callbackIds": ["cb_x"]})
    assert status == 404
    assert await database.pool.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_a_link_lives_between_a_minute_and_a_week(api):
    for seconds in (59, 7 * 86400 + 1):
        status, err = await api.post("/v1/portal-links", {"all": True, "expiresIn": seconds})
        assert (status, err["error"]["field"]) == (400, "expiresIn")
    status, err = await api.post("/v1/portal-links", {"all": True, "expiresIn": "60"})
    assert status == 400  # strict: a string is not a number


async def test_making_a_link_needs_the_callbacks_scope(api, database):
    reader = await make_key(database, "acme", ["events:read"])
    status, _ = await api.post("/v1/portal-links", {"all": True}, key=reader)
    assert status == 403
