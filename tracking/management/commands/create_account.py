from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tracking.models import Account, ApiCredential, User
from tracking.services.accounts import account_create, username_check


class Command(BaseCommand):
    help = "Create an account with an API credential and a portal user; print the credentials."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--secure-key", help="Use this key instead of a random one.")
        parser.add_argument("--password", help="Portal password (no portal login without one).")

    def handle(self, *args, username, secure_key, password, **options):
        try:
            username_check(username)
        except ValidationError as exc:
            raise CommandError(exc.messages[0]) from None
        taken = (
            Account.objects.filter(name=username).exists()
            or ApiCredential.objects.filter(username=username).exists()
            or User.objects.filter(username=username).exists()
        )
        if taken:
            raise CommandError(f"{username} already exists")
        account, issued, user = account_create(
            username=username, secure_key=secure_key, password=password
        )
        self.stdout.write(f"account:   {account.name}")
        self.stdout.write(f"username:  {issued.credential.username}")
        self.stdout.write(f"secureKey: {issued.secure_key}")
        if password:
            self.stdout.write(f"portal:    log in as {user.username} with the given password")
