from django.core.management.base import BaseCommand, CommandError

from tracking.models import DkimKey
from tracking.services.dkim_keys import InvalidKey, dkim_key_rotate


class Command(BaseCommand):
    help = (
        "Start a DKIM key rotation for each DOMAIN (or --all domains with a signing key): a new "
        "key, whose TXT record is printed. The current key signs until a domain check sees the "
        "new record; then the new key signs and the old record must stay published for "
        "DKIM_ROTATION_OVERLAP_DAYS. A rotation under way prints its waiting key again."
    )

    def add_arguments(self, parser):
        parser.add_argument("domains", nargs="*", metavar="DOMAIN")
        parser.add_argument("--all", action="store_true", help="Every domain with a signing key.")

    def handle(self, *args, domains, all, **options):
        if all:
            active = DkimKey.objects.filter(status=DkimKey.Status.ACTIVE)
            domains = [*domains, *active.values_list("domain", flat=True)]
        if not domains:
            raise CommandError("name a domain, or --all")
        for domain in dict.fromkeys(domains):
            try:
                key = dkim_key_rotate(domain=domain)
            except InvalidKey as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(key.dns_record)
        self.stdout.write(
            "Publish the record(s) above; `manage.py check_domains` (or the hourly check) then "
            "starts signing with them."
        )
