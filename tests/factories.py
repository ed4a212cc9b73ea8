"""factory-boy factories for the product's nouns."""

from __future__ import annotations

import factory

from tracking.models import Account, ApiCredential, Contact, Link, Message, Node, User
from tracking.models.accounts import hash_secure_key


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    name = factory.Sequence(lambda n: f"account{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    account = factory.SubFactory(AccountFactory)
    password = factory.PostGenerationMethodCall("set_password", "password")

    @factory.post_generation
    def saved(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class ApiCredentialFactory(factory.django.DjangoModelFactory):
    """Pass `secure_key=...` to choose the key; it is stored hashed like a real one."""

    class Meta:
        model = ApiCredential
        exclude = ["secure_key"]

    account = factory.SubFactory(AccountFactory)
    username = factory.Sequence(lambda n: f"api{n}")
    secure_key = factory.Sequence(lambda n: f"secure-key-{n:04d}-0123456789abcdef")
    key_hash = factory.LazyAttribute(lambda o: hash_secure_key(o.secure_key))
    key_hint = factory.LazyAttribute(lambda o: o.secure_key[:4])


class NodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Node

    account = factory.SubFactory(AccountFactory)
    node_id = factory.Sequence(lambda n: f"node{n}")
    node_name = factory.Sequence(lambda n: f"Node {n}")
    node_type = "Dealer"


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    account = factory.SubFactory(AccountFactory)
    contact_id = factory.Sequence(lambda n: f"contact{n}")
    name = factory.Sequence(lambda n: f"Contact {n}")
    email = factory.Sequence(lambda n: f"contact{n}@example.com")


class LinkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Link

    node = factory.SubFactory(NodeFactory)
    account = factory.SelfAttribute("node.account")
    link_id = factory.Sequence(lambda n: f"link{n}")
    link_name = factory.Sequence(lambda n: f"Link {n}")
    link_type = "Vehicle"


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    link = factory.SubFactory(LinkFactory)
    account = factory.SelfAttribute("link.account")
    sender_address = "bob@sender.example"
    sender_name = "Bob Bob"
    recipient_address = factory.Sequence(lambda n: f"rcpt{n}@example.net")
    recipient_name = "Billy Bob"
    subject = "Hello"
    text_content = "Plain text"
    html_content = "<html><body><p>HTML</p></body></html>"
