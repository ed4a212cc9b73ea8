"""Admission at end of DATA: the sender's SPF, DKIM, ARC and DMARC decide, before any 250,
whether we take the message at all.

- DMARC `fail` for a From domain whose policy asks `reject`: `550 5.7.1`, the refusal recorded
  (an InboundMessage `refused`, with its verdicts), nothing forwarded.
- DMARC `fail` for a `quarantine` policy: taken, marked `quarantined` (admin filter, counted),
  and forwarded with `X-Spam-Flag: YES` and our `X-Iovox-Quarantine` header.
- A DNS failure that could change the outcome (a timeout, SERVFAIL): `451 4.7.0`, so the
  sender tries again; never a silent pass.
- Anything else (pass, none, a `p=none` failure): taken.

The lookups go to DNS_NAMESERVERS, each bounded by DNS_TIMEOUT and all of one message's by
authentication.TIME_LIMIT. The SMTP server runs this in a thread pool of its own, off the
event loop (conversations/inbound/smtp.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from conversations.inbound.authentication import FAIL, Verdict, inbound_authenticate
from conversations.inbound.raw_mail import Envelope

log = logging.getLogger(__name__)

QUARANTINE_HEADER = "X-Iovox-Quarantine"


@dataclass(frozen=True)
class Admission:
    """What the authentication of one message decided."""

    verdict: Verdict
    # The SMTP reply that refuses the message ("550 5.7.1 ...", "451 4.7.0 ..."), or "".
    reply: str = ""
    quarantined: bool = False

    @property
    def refused(self) -> bool:
        """Refused for good (recorded); a 4xx is neither stored nor refused."""
        return self.reply.startswith("5")

    @property
    def deferred(self) -> bool:
        return self.reply.startswith("4")


def inbound_admit(*, raw: bytes, envelope: Envelope) -> Admission:
    """Authenticate a message as the SMTP session presented it and decide its admission
    (see the module docstring). Never raises on hostile input."""
    verdict = inbound_authenticate(
        raw=raw, ip=envelope.peer, mail_from=envelope.mail_from, helo=envelope.helo
    )
    if verdict.dns_failed:
        return Admission(
            verdict, reply="451 4.7.0 Temporary DNS failure checking the sender, try again later"
        )
    if verdict.dmarc == FAIL and verdict.dmarc_disposition == "reject":
        return Admission(
            verdict,
            reply=f"550 5.7.1 Rejected by the DMARC policy of {verdict.from_domain}",
        )
    quarantined = verdict.dmarc == FAIL and verdict.dmarc_disposition == "quarantine"
    return Admission(verdict, quarantined=quarantined)
