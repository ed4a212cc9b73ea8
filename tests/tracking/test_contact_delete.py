from __future__ import annotations

import pytest

from tests.factories import ContactFactory, LinkFactory
from tracking.models import Contact
from tracking.services.directory import ContactInUse, contact_delete


def test_contact_delete_removes_an_unused_contact(alice):
    contact = ContactFactory(account=alice.account)

    contact_delete(contact=contact)

    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_contact_delete_refuses_while_links_use_it_and_names_them(alice):
    contact = ContactFactory(account=alice.account)
    LinkFactory(node__account=alice.account, link_id="b", destination=contact)
    LinkFactory(node__account=alice.account, link_id="a", destination=contact)

    with pytest.raises(ContactInUse) as refused:
        contact_delete(contact=contact)

    assert refused.value.link_ids == ["a", "b"]
    assert Contact.objects.filter(pk=contact.pk).exists()
