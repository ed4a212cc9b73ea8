from django.core.management.base import BaseCommand, CommandError

from conversations.domains import NotOurDomain, domains_check


class Command(BaseCommand):
    help = (
        "Check over DNS each of our domains (alias, proxy, bounce) and each DKIM signing domain, "
        "or only the DOMAINs named: MX, SPF, DKIM and DMARC, each ok, missing, wrong or "
        "'could not check', with the exact record to publish. A published new DKIM key starts "
        "signing. Exits 1 when a record is not ok."
    )

    def add_arguments(self, parser):
        parser.add_argument("domains", nargs="*", metavar="DOMAIN")

    def handle(self, *args, domains, **options):
        try:
            checked = domains_check(domains=domains or None)
        except NotOurDomain as exc:
            raise CommandError(str(exc)) from None
        to_publish = 0
        for row in checked:
            self.stdout.write(f"{row.domain} ({row.kinds})")
            for finding in row.findings:
                status = "could not check" if finding["status"] == "unknown" else finding["status"]
                self.stdout.write(f"  {finding['check'].upper():5} {status:15} {finding['name']}")
                self.stdout.write(f"        {finding['detail']}")
                if finding["status"] != "ok" and finding["record"]:
                    to_publish += 1
                    self.stdout.write(f"        publish: {finding['record']}")
        if any(f["status"] != "ok" for row in checked for f in row.findings):
            self.stdout.write(f"{to_publish} record(s) to publish.")
            raise SystemExit(1)
        self.stdout.write("Every record is as it should be.")
