"""The provider adapters, by the name a source's `provider` uses."""

from __future__ import annotations

from dispatcher.inbound.adapter import Adapter
from dispatcher.inbound.providers.brevo import Brevo
from dispatcher.inbound.providers.mailgun import Mailgun
from dispatcher.inbound.providers.postmark import Postmark
from dispatcher.inbound.providers.resend import Resend
from dispatcher.inbound.providers.sendgrid import SendGrid
from dispatcher.inbound.providers.ses import Ses
from dispatcher.inbound.providers.sparkpost import SparkPost

ADAPTERS: dict[str, Adapter] = {
    a.provider: a
    for a in (
        SendGrid(),
        Ses(),
        Mailgun(),
        Resend(),
        Postmark(),
        SparkPost(),
        Brevo(),
    )
}
