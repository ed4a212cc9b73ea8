from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tracking.delivery.dkim import InvalidKey, dkim_key_add


class Command(BaseCommand):
    help = (
        "Sign outgoing mail as DOMAIN with DKIM: a new 2048-bit RSA key (or --private-key), "
        "then print the DNS TXT record to publish."
    )

    def add_arguments(self, parser):
        parser.add_argument("domain")
        parser.add_argument("--selector", default="iovox", help="DNS selector (default iovox).")
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
        self.stdout.write(f"Mail From {key.domain} (and its subdomains) is signed from now on.")
        self.stdout.write("Publish this TXT record:")
        self.stdout.write(f"{key.dns_name}. IN TXT {key.dns_txt_strings}")
