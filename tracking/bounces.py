"""What a failure says about the recipient's address: `hard`, `soft` or `block`.

One function, `bounce_classify`, decides it for an SMTP reply during delivery and for a
delivery status notification that comes back later, from the reply code (RFC 5321), the
enhanced status code (RFC 3463, `class.subject.detail`) and, where those are generic, the
words of the reply:

- `hard`: permanent and about the address: it does not exist (5.1.1), its domain takes no
  mail (5.1.2, 5.1.10, 5.4.4), the mailbox is disabled (5.2.1).
- `soft`: temporary (4.x.x), or the address is fine but this message was not delivered:
  mailbox full or over quota (x.2.2, even as a 5xx), message too large, a protocol problem.
- `block`: refused by policy or reputation (5.7.x: spam, blocklists, SPF/DKIM/DMARC).

Only a hard bounce puts the address on the account's suppression list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracking.models import BounceType

ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
REPLY_CODE = re.compile(r"(?<!\d)([245]\d\d)(?!\d)")

# Enhanced codes (class 5) by "subject.detail", then by subject alone.
HARD_DETAILS = {"1.1", "1.2", "1.3", "1.6", "1.10", "2.1", "4.4"}
BLOCK_DETAILS = {"1.7", "1.8"}  # our sender address is refused: about us, not the recipient
SUBJECT_TYPES = {
    "1": BounceType.HARD,
    "2": BounceType.SOFT,
    "3": BounceType.SOFT,
    "4": BounceType.SOFT,
    "5": BounceType.SOFT,
    "6": BounceType.SOFT,
    "7": BounceType.BLOCK,
}
# Words that decide a reply whose codes are generic (5.0.0, or none).
WORDS = [
    (
        BounceType.SOFT,
        re.compile(r"quota|mailbox (is )?full|insufficient (storage|space)|too large", re.I),
    ),
    (
        BounceType.BLOCK,
        re.compile(
            r"spam|block ?list|blacklist|blocked|reputation|policy|spf|dkim|dmarc|"
            r"not authori[sz]ed|denied|banned|abuse",
            re.I,
        ),
    ),
    (
        BounceType.HARD,
        re.compile(
            r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
            r"doesn'?t exist|not found|recipient (address )?rejected|invalid (recipient|mailbox|"
            r"address)|unknown (recipient|mailbox)|mailbox unavailable|no mailbox|"
            r"address rejected|account (has been )?disabled|inactive",
            re.I,
        ),
    ),
]
# Basic reply codes of class 5 with no better clue (RFC 5321 section 4.2.3).
HARD_CODES = {550, 551, 553, 521, 556}
BLOCK_CODES = {554, 541}


@dataclass(frozen=True)
class Bounce:
    smtp_code: int | None
    enhanced_code: str
    bounce_type: str


def enhanced_code_in(text: str) -> str:
    """The first RFC 3463 code in `text` ("5.1.1"), or ""."""
    match = ENHANCED.search(text or "")
    return ".".join(match.groups()) if match else ""


def reply_code_in(text: str) -> int | None:
    """The first SMTP reply code in `text` (a DSN's Diagnostic-Code), or None."""
    match = REPLY_CODE.search(text or "")
    return int(match.group(1)) if match else None


def bounce_classify(
    *,
    smtp_code: int | None = None,
    enhanced_code: str = "",
    text: str = "",
    permanent: bool | None = None,
) -> Bounce:
    """Classify a failure. `enhanced_code` is looked for in `text` when not given;
    `permanent` is what a report says when it has no codes at all (a plain-text bounce: its
    parser's verdict), else the reply code's class decides."""
    enhanced = enhanced_code or enhanced_code_in(text)
    kind = _by_enhanced(enhanced) or _by_words(smtp_code, enhanced, text)
    if kind is None:
        kind = _by_code(smtp_code, enhanced, permanent)
    return Bounce(smtp_code, enhanced, kind)


def _by_enhanced(enhanced: str) -> str | None:
    if not enhanced:
        return None
    klass, subject, detail = enhanced.split(".")
    key = f"{subject}.{detail}"
    if klass == "4":
        return BounceType.SOFT
    if klass != "5" or subject == "0" or key == "1.0":
        return None  # generic ("other or undefined status"): let the words decide
    if key in HARD_DETAILS:
        return BounceType.HARD
    if key in BLOCK_DETAILS:
        return BounceType.BLOCK
    if key == "2.2":
        return BounceType.SOFT
    return SUBJECT_TYPES.get(subject)


def _by_words(smtp_code: int | None, enhanced: str, text: str) -> str | None:
    temporary = (smtp_code is not None and smtp_code < 500) or enhanced.startswith("4.")
    if temporary or not text:
        return None
    for kind, words in WORDS:
        if words.search(text):
            return kind
    return None


def _by_code(smtp_code: int | None, enhanced: str, permanent: bool | None) -> str:
    if smtp_code is None and enhanced:
        smtp_code = 500 if enhanced.startswith("5") else 400
    if smtp_code is None:
        return BounceType.HARD if permanent else BounceType.SOFT
    if smtp_code < 500:
        return BounceType.SOFT
    if smtp_code in HARD_CODES:
        return BounceType.HARD
    if smtp_code in BLOCK_CODES:
        return BounceType.BLOCK
    return BounceType.SOFT  # 500-504: a protocol problem; 552: storage
