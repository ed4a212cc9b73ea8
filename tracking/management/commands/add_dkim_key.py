from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tracking.services.dkim_keys import InvalidKey, dkim_key_add


class Command(BaseCommand):
    help = (
        "Sign outgoing mail as DOMAIN with DKIM: a new 2048-bit RSA key (or --private-key) is "
        "added, and its DNS TXT record printed. It signs once a domain check sees the record "
        "published; until then the domain's current key, if any, goes on signing."
    )

    def add_arguments(self, parser):
        parser.add_argument("domain")
        parser.add_argument("--selector", default="", help="DNS selector (default iovox-YYYYMMDD).")
        parser.add_argument("--private-key", type=Path, help="Use this PEM RSA private key.")
        parser.add_argument("--bits", type=int, default=2048, choices=[1024, 2048, 3072, 4096])

    def handle(self, *args, domain, selector, private_key, bits, **options):
        try:
            pem = private_key.read_text() if private_key else ""
        except OSError as exc:
            raise CommandError(f"cannot read {private_key}: {exc}") from None
        try:
            key = dkim_key_add(domain=domain, selector=selector, private_key=pem, bits=bits)
        except InvalidKey as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"A new key for mail From {key.domain} (and its subdomains).")
        self.stdout.write("Publish this TXT record:")
        self.stdout.write(key.dns_record)
        self.stdout.write(
            f"It signs once `manage.py check_domains {key.domain}` (or the hourly check) sees it."
        )
