"""Demo data for `make run`: an account to log in with, a directory, and a month of history."""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from tracking.models import (
    Account,
    ApiCredential,
    DeliveryAttempt,
    Disposition,
    Message,
    ReadDisposition,
    User,
)
from tracking.services import directory
from tracking.services.accounts import account_create

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"
DEMO_SECURE_KEY = "demo-secure-key"

NODES = [
    (
        "dealer-001",
        "Bobs automotive",
        "Dealer",
        [("civic", "Honda Civic", "Vehicle"), ("yaris", "Toyota Yaris", "Vehicle")],
    ),
    ("dealer-002", "Carla's Cars", "Dealer", [("golf", "VW Golf", "Vehicle")]),
    ("agency-01", "Harbour Lettings", "Agency", [("flat-12", "Flat 12, Quay St", "Property")]),
]
CONTACTS = [("sales", "Sales desk", "sales@demo.example"), ("lettings", "Lettings", "")]
# Weighted the way real traffic is: mostly sent, some of everything else.
HISTORY = [Disposition.SENT] * 12 + [
    Disposition.QUEUED,
    Disposition.UNDELIVERABLE,
    Disposition.NO_MX_RECORD,
    Disposition.RECEIVED_BOUNCED,
    Disposition.EXPIRED,
    Disposition.NO_RULES,
]


@transaction.atomic
def demo_seed(*, messages: int = 120, seed: int = 7) -> Account:
    """Create the demo account once; later calls leave it as it is."""
    existing = Account.objects.filter(name=DEMO_USERNAME).first()
    if existing is not None:
        return existing
    account, _, _ = account_create(
        username=DEMO_USERNAME, secure_key=DEMO_SECURE_KEY, password=DEMO_PASSWORD
    )
    contacts = [
        directory.contact_create(account=account, contact_id=cid, name=name, email=email)
        for cid, name, email in CONTACTS
    ]
    links = []
    for node_id, node_name, node_type, node_links in NODES:
        node = directory.node_create(
            account=account, node_id=node_id, node_name=node_name, node_type=node_type
        )
        for link_id, link_name, link_type in node_links:
            link = directory.link_create(
                account=account,
                node=node,
                link_id=link_id,
                link_name=link_name,
                link_type=link_type,
                destination=contacts[0] if node_type == "Dealer" else None,
            )
            directory.link_generate_alias(link=link)
            links.append(link)
    _demo_history(account, links, messages, random.Random(seed))
    return account


def _demo_history(account: Account, links, count: int, rng: random.Random) -> None:
    now = timezone.now()
    rows, attempts = [], []
    for i in range(count):
        received = now - timedelta(days=rng.uniform(0, 30))
        disposition = rng.choice(HISTORY)
        delivered = disposition in (Disposition.SENT, Disposition.RECEIVED_BOUNCED)
        read = delivered and rng.random() < 0.45
        message = Message(
            account=account,
            link=rng.choice(links),
            sender_address="bob.bob@demo.example",
            sender_name="Bob Bob",
            recipient_address=f"customer{i % 17}@example.net",
            recipient_name=f"Customer {i % 17}",
            subject=rng.choice(["Your test drive", f"Quote #{1000 + i}", "Viewing times"]),
            text_content="Thanks for your enquiry.",
            html_content="<html><body><p>Thanks for your enquiry.</p></body></html>",
            receive_date=received,
            delivery_date=received + timedelta(seconds=rng.randint(1, 90)) if delivered else None,
            disposition=disposition,
            read_disposition=ReadDisposition.READ if read else ReadDisposition.UNREAD,
            read_first_date=received + timedelta(hours=rng.uniform(0.1, 20)) if read else None,
            attempt_count=1,
        )
        rows.append(message)
    Message.objects.bulk_create(rows)
    for message in rows:
        if message.disposition in (Disposition.NO_RULES, Disposition.NO_MX_RECORD):
            continue
        attempts.append(
            DeliveryAttempt(
                message=message,
                attempted_at=message.delivery_date or message.receive_date,
                mx_host="mx.example.net",
                smtp_code=250 if message.delivery_date else 451,
                smtp_text="2.0.0 Ok: queued" if message.delivery_date else "4.7.1 Try again later",
                outcome=message.disposition,
            )
        )
    DeliveryAttempt.objects.bulk_create(attempts)


def demo_credentials() -> dict[str, str]:
    credential = ApiCredential.objects.get(username=DEMO_USERNAME)
    user = User.objects.get(username=DEMO_USERNAME)
    return {
        "username": credential.username,
        "secureKey": DEMO_SECURE_KEY,
        "portal_user": user.username,
        "portal_password": DEMO_PASSWORD,
    }
