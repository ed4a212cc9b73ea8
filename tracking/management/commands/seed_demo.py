from django.core.management.base import BaseCommand

from tracking.services.demo import demo_credentials, demo_seed


class Command(BaseCommand):
    help = "Create a demo account with nodes, links, contacts and a month of messages (once)."

    def handle(self, *args, **options):
        account = demo_seed()
        creds = demo_credentials()
        self.stdout.write(f"demo account {account.name}: {account.messages.count()} messages")
        self.stdout.write(
            f"  API headers: username: {creds['username']}  secureKey: {creds['secureKey']}"
        )
        self.stdout.write(f"  portal: {creds['portal_user']} / {creds['portal_password']}")
