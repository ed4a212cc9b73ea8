from django.core.management.base import BaseCommand, CommandError

from conversations.services import proxy_domain_add
from tracking.models import ApiCredential


class Command(BaseCommand):
    help = "Add a proxy domain, shared by every account or private to one (--account USERNAME)."

    def add_arguments(self, parser):
        parser.add_argument("domain")
        parser.add_argument("--account", help="The API username of the account it is private to.")

    def handle(self, *args, domain, account, **options):
        owner = None
        if account:
            credential = ApiCredential.objects.select_related("account").filter(username=account)
            if not credential.exists():
                raise CommandError(f"no account with the username {account}")
            owner = credential.first().account
        proxy_domain, created = proxy_domain_add(domain=domain, account=owner)
        sharing = f"private to {owner}" if owner else "shared"
        verb = "added" if created else "updated"
        self.stdout.write(f"{proxy_domain.domain}: {verb}, {sharing}")
