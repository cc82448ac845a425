"""The header dispatcher's relay sets for each provider, and the SES tag round trip for any messageKey."""

from __future__ import annotations

import json
import re

import pytest

from dispatcher.inbound.providers.ses import message_key
from dispatcher.sending.providers import PROVIDERS, message_key_headers


def test_each_provider_gets_the_header_it_echoes_and_no_provider_gets_none():
    key = "order-1"
    assert message_key_headers(None, key) == {}
    assert message_key_headers("ses", key) == {"X-SES-MESSAGE-TAGS": "messageKey=order-1"}
    assert json.loads(message_key_headers("sendgrid", key)["X-SMTPAPI"]) == {"unique_args": {"messageKey": key}}
    assert json.loads(message_key_headers("mailgun", key)["X-Mailgun-Variables"]) == {"messageKey": key}
    assert message_key_headers("postmark", key) == {"X-PM-Metadata-messageKey": key}
    assert json.loads(message_key_headers("sparkpost", key)["X-MSYS-API"]) == {"metadata": {"messageKey": key}}
    assert message_key_headers("brevo", key) == {"X-Mailin-custom": key}
    assert message_key_headers("resend", key) == {}
    assert set(PROVIDERS) == {"ses", "sendgrid", "mailgun", "postmark", "sparkpost", "brevo", "resend"}


@pytest.mark.parametrize("key", ["order.7", "ann@example.com", "ключ-1", "a b,c=d", "é" * 90])
def test_a_key_ses_cannot_hold_in_a_tag_goes_as_base64url_and_comes_back_whole(key: str):
    name, _, value = message_key_headers("ses", key)["X-SES-MESSAGE-TAGS"].partition("=")
    assert name == "messageKeyB64" and re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value)
    assert message_key({name: [value]}) == key


def test_a_key_too_long_for_a_tag_even_encoded_is_left_out():
    assert message_key_headers("ses", "ключ" * 50) == {}


def test_a_tag_that_does_not_decode_names_no_message():
    assert message_key({"messageKeyB64": ["_w"]}) is None  # 0xff: not UTF-8
    assert message_key({"messageKey": ["order-1"], "messageKeyB64": ["b3JkZXI"]}) == "order-1"
