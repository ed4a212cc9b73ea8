"""People or machines: classify each open and click, with the reason a user will read.

The spec's rule stays: any open or click marks the message read. But mail readers and
security gateways fetch pixels and follow links on their own, so each event also says whether
it looks automated and why. The rules are tables, checked in this order, first match wins:

1. the request itself: HEAD (link checkers; readers use GET), no User-Agent;
2. Apple Mail Privacy Protection: Apple's proxy fetches every image of a message soon after
   delivery, whether or not it is read, with the bare agent `Mozilla/5.0` and nothing else,
   from Apple's network (17.0.0.0/8). Apple Mail itself sends a full agent (`Mozilla/5.0
   (Macintosh; ...) AppleWebKit/...`), so a bare `Mozilla/5.0` is taken as the proxy;
3. the User-Agent: image proxies (Gmail's `GoogleImageProxy`, `YahooMailProxy`), Microsoft's
   link preview and probes, security gateways (Barracuda, Mimecast, Proofpoint, Symantec, ...),
   crawlers and HTTP libraries (curl, python-requests, headless browsers);
4. the network: ranges of scanners that present an ordinary browser's agent;
5. timing (clicks only): a click within TRACKING_SCANNER_WINDOW seconds (default 10) of
   delivery — gateways follow every link as the message arrives — or one of at least
   TRACKING_BURST_CLICKS (default 3) clicks on the same message within one second.

An image proxy such as Gmail's fetches the pixel when the reader opens the message, so it is
usually a real open, but the reader's address and agent are hidden and a cached image is not
fetched again: it is marked automated with a reason that says so, and the user decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings


@dataclass(frozen=True)
class Verdict:
    automated: bool
    reason: str = ""


HUMAN = Verdict(False)


@dataclass(frozen=True)
class AgentPattern:
    """A case-insensitive substring of the User-Agent and what it means."""

    needle: str
    reason: str


APPLE_PRIVACY_AGENT = "Mozilla/5.0"

AGENT_PATTERNS: tuple[AgentPattern, ...] = (
    # Image proxies of the big mailbox providers.
    AgentPattern("googleimageproxy", "Gmail image proxy (reader's address and agent hidden)"),
    AgentPattern("ggpht.com", "Gmail image proxy (reader's address and agent hidden)"),
    AgentPattern("yahoomailproxy", "Yahoo Mail image proxy (reader's address and agent hidden)"),
    AgentPattern("ymailproxy", "Yahoo Mail image proxy (reader's address and agent hidden)"),
    # Microsoft: link previews, Office's link probes, scanners with a legacy IE agent.
    AgentPattern("bingpreview", "Microsoft link preview (BingPreview)"),
    AgentPattern("microsoft office existence discovery", "Microsoft Office link probe"),
    AgentPattern("microsoft office protocol discovery", "Microsoft Office link probe"),
    AgentPattern("skypeuripreview", "Microsoft Teams/Skype link preview"),
    AgentPattern("msie ", "legacy Internet Explorer agent (Outlook.com and Safe Links scanners)"),
    # Security gateways that follow links to check them.
    AgentPattern("barracuda", "Barracuda link protection"),
    AgentPattern("mimecast", "Mimecast URL protection"),
    AgentPattern("proofpoint", "Proofpoint URL Defense"),
    AgentPattern("symantec", "Symantec email security"),
    AgentPattern("messagelabs", "Symantec email security (MessageLabs)"),
    AgentPattern("trend micro", "Trend Micro link scanner"),
    AgentPattern("trendmicro", "Trend Micro link scanner"),
    AgentPattern("sophos", "Sophos link scanner"),
    AgentPattern("fireeye", "FireEye link scanner"),
    AgentPattern("forcepoint", "Forcepoint link scanner"),
    AgentPattern("ironport", "Cisco IronPort link scanner"),
    AgentPattern("virustotal", "VirusTotal scanner"),
    AgentPattern("urlscan", "urlscan.io scanner"),
    # Crawlers and link unfurlers.
    AgentPattern("googlebot", "crawler (Googlebot)"),
    AgentPattern("bingbot", "crawler (bingbot)"),
    AgentPattern("facebookexternalhit", "link preview (Facebook)"),
    AgentPattern("slackbot", "link preview (Slack)"),
    AgentPattern("whatsapp", "link preview (WhatsApp)"),
    AgentPattern("telegrambot", "link preview (Telegram)"),
    AgentPattern("discordbot", "link preview (Discord)"),
    AgentPattern("twitterbot", "link preview (X/Twitter)"),
    AgentPattern("linkedinbot", "link preview (LinkedIn)"),
    AgentPattern("crawler", "crawler"),
    AgentPattern("spider", "crawler"),
    AgentPattern("bot/", "bot"),
    AgentPattern("+http", "bot (agent carries an info URL)"),
    # HTTP libraries and headless browsers.
    AgentPattern("headlesschrome", "headless browser"),
    AgentPattern("phantomjs", "headless browser"),
    AgentPattern("curl/", "command-line client (curl)"),
    AgentPattern("wget/", "command-line client (wget)"),
    AgentPattern("python-requests", "HTTP library (python-requests)"),
    AgentPattern("python-urllib", "HTTP library (python-urllib)"),
    AgentPattern("aiohttp", "HTTP library (aiohttp)"),
    AgentPattern("python-httpx", "HTTP library (httpx)"),
    AgentPattern("go-http-client", "HTTP library (Go)"),
    AgentPattern("okhttp", "HTTP library (OkHttp)"),
    AgentPattern("java/", "HTTP library (Java)"),
    AgentPattern("apache-httpclient", "HTTP library (Apache HttpClient)"),
    AgentPattern("libwww-perl", "HTTP library (Perl)"),
    AgentPattern("node-fetch", "HTTP library (node-fetch)"),
    AgentPattern("axios/", "HTTP library (axios)"),
)


@dataclass(frozen=True)
class NetworkPattern:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    reason: str


APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")

NETWORK_PATTERNS: tuple[NetworkPattern, ...] = (
    # Microsoft Defender for Office 365 detonates links from here with a browser's agent.
    NetworkPattern(ipaddress.ip_network("40.94.0.0/16"), "Microsoft Defender Safe Links scan"),
)


@dataclass(frozen=True)
class HitFacts:
    """What classification looks at: the request, and when the message was delivered."""

    kind: str  # "open" or "click"
    method: str
    user_agent: str
    ip: str | None
    occurred_at: datetime
    delivery_date: datetime | None = None
    # Clicks on the same message within a second either side of this one, this one excluded.
    clicks_nearby: int = 0


def hit_classify(facts: HitFacts) -> Verdict:
    """Human, or automated with the reason, by the rules in this module's docstring."""
    for rule in (_by_request, _by_agent, _by_network, _by_timing):
        verdict = rule(facts)
        if verdict is not None:
            return verdict
    return HUMAN


def _by_request(facts: HitFacts) -> Verdict | None:
    if facts.method.upper() == "HEAD":
        return Verdict(True, "HEAD request (link checker)")
    if not facts.user_agent.strip():
        return Verdict(True, "no user agent")
    return None


def _by_agent(facts: HitFacts) -> Verdict | None:
    agent = facts.user_agent.strip()
    if agent == APPLE_PRIVACY_AGENT:
        if _in_network(facts.ip, [APPLE_NETWORK]):
            return Verdict(True, "Apple Mail Privacy Protection prefetch (Apple's proxy)")
        return Verdict(True, "bare Mozilla/5.0 agent (Apple Mail Privacy Protection style)")
    lowered = agent.lower()
    for pattern in AGENT_PATTERNS:
        if pattern.needle in lowered:
            return Verdict(True, pattern.reason)
    return None


def _by_network(facts: HitFacts) -> Verdict | None:
    for pattern in NETWORK_PATTERNS:
        if _in_network(facts.ip, [pattern.network]):
            return Verdict(True, pattern.reason)
    return None


def _by_timing(facts: HitFacts) -> Verdict | None:
    if facts.kind != "click":
        return None
    if facts.delivery_date is not None:
        elapsed = (facts.occurred_at - facts.delivery_date).total_seconds()
        if 0 <= elapsed < settings.TRACKING_SCANNER_WINDOW:
            return Verdict(True, f"clicked {elapsed:.0f} s after delivery (link scanner)")
    if facts.clicks_nearby + 1 >= settings.TRACKING_BURST_CLICKS:
        return Verdict(True, f"{facts.clicks_nearby + 1} clicks within a second (link scanner)")
    return None


def _in_network(ip: str | None, networks: Iterable) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address.version == n.version and address in n for n in networks)


def clicks_nearby(times: list[datetime], at: datetime, window: timedelta) -> int:
    """How many of `times` (other clicks on the same message) fall within `window` of `at`."""
    return sum(1 for t in times if abs((t - at).total_seconds()) <= window.total_seconds())
