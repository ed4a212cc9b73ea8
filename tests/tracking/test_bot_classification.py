from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tracking.engagement.classify import AGENT_PATTERNS, HitFacts, Verdict, hit_classify

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
OUTLOOK_DESKTOP = (
    "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Outlook 16.0.17928; Pro"
)
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0"
ANDROID_CUBOT = (
    "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)


def facts(user_agent: str = CHROME_WINDOWS, **overrides) -> HitFacts:
    values = {
        "kind": "open",
        "method": "GET",
        "user_agent": user_agent,
        "ip": "203.0.113.7",
        "occurred_at": NOW,
    }
    values.update(overrides)
    return HitFacts(**values)


HUMAN_AGENTS = [
    CHROME_WINDOWS,
    APPLE_MAIL,
    IPHONE_MAIL,
    OUTLOOK_DESKTOP,
    THUNDERBIRD,
    ANDROID_CUBOT,
]


@pytest.mark.parametrize("user_agent", HUMAN_AGENTS)
def test_mail_readers_and_browsers_of_people_are_human(user_agent):
    assert hit_classify(facts(user_agent)) == Verdict(False)
    assert hit_classify(facts(user_agent, kind="click")) == Verdict(False)


MACHINES = [
    # (user agent, ip, reason)
    (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "66.249.84.1",
        "Gmail image proxy (reader's address and agent hidden)",
    ),
    (
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "98.137.1.1",
        "Yahoo Mail image proxy (reader's address and agent hidden)",
    ),
    ("Mozilla/5.0", "17.58.63.10", "Apple Mail Privacy Protection prefetch (Apple's proxy)"),
    (
        "Mozilla/5.0",
        "104.28.1.1",
        "bare Mozilla/5.0 agent (Apple Mail Privacy Protection style)",
    ),
    (
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; WOW64; Trident/6.0)",
        "132.245.26.156",
        "legacy Internet Explorer agent (Outlook.com and Safe Links scanners)",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "BingPreview/1.0b",
        "40.77.1.1",
        "Microsoft link preview (BingPreview)",
    ),
    ("Microsoft Office Existence Discovery", "52.1.1.1", "Microsoft Office link probe"),
    ("Barracuda Sentinel (EE)", "64.235.144.1", "Barracuda link protection"),
    ("Mimecast-URL-Protect/1.0", "205.139.110.1", "Mimecast URL protection"),
    ("Proofpoint URL Defense", "148.163.1.1", "Proofpoint URL Defense"),
    ("Symantec WebPulse", "216.1.1.1", "Symantec email security"),
    (CHROME_WINDOWS, "40.94.29.17", "Microsoft Defender Safe Links scan"),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        None,
        "crawler (Googlebot)",
    ),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", None, "link preview (Slack)"),
    ("SomeScanner/2.0 (+https://scanner.example/about)", None, "bot (agent carries an info URL)"),
    ("curl/8.5.0", None, "command-line client (curl)"),
    ("python-requests/2.32.3", None, "HTTP library (python-requests)"),
    ("Go-http-client/1.1", None, "HTTP library (Go)"),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        None,
        "headless browser",
    ),
    ("", None, "no user agent"),
    ("   ", None, "no user agent"),
]


@pytest.mark.parametrize(("user_agent", "ip", "reason"), MACHINES)
def test_image_proxies_scanners_and_tools_are_automated_with_their_reason(user_agent, ip, reason):
    assert hit_classify(facts(user_agent, ip=ip)) == Verdict(True, reason)


def test_a_head_request_is_automated_whatever_the_agent():
    assert hit_classify(facts(method="HEAD")) == Verdict(True, "HEAD request (link checker)")


def test_a_click_within_the_scanner_window_after_delivery_is_automated(settings):
    settings.TRACKING_SCANNER_WINDOW = 10
    soon = facts(kind="click", delivery_date=NOW - timedelta(seconds=3))
    assert hit_classify(soon) == Verdict(True, "clicked 3 s after delivery (link scanner)")
    later = facts(kind="click", delivery_date=NOW - timedelta(seconds=11))
    assert hit_classify(later) == Verdict(False)
    # Opens are not judged by timing: a reader may well open a message as it arrives.
    assert (
        hit_classify(facts(kind="open", delivery_date=NOW - timedelta(seconds=3))).automated
        is False
    )


def test_a_click_before_the_recorded_delivery_date_is_not_judged_by_timing():
    early = facts(kind="click", delivery_date=NOW + timedelta(seconds=2))
    assert hit_classify(early) == Verdict(False)


def test_many_clicks_within_a_second_are_automated(settings):
    settings.TRACKING_BURST_CLICKS = 3
    assert hit_classify(facts(kind="click", clicks_nearby=1)) == Verdict(False)
    assert hit_classify(facts(kind="click", clicks_nearby=2)) == Verdict(
        True, "3 clicks within a second (link scanner)"
    )


def test_invalid_or_ipv6_addresses_do_not_break_network_rules():
    assert hit_classify(facts(ip="not-an-ip")) == Verdict(False)
    assert hit_classify(facts(ip="2001:db8::1")) == Verdict(False)
    assert hit_classify(facts("Mozilla/5.0", ip="2001:db8::1")).automated


def test_every_agent_pattern_is_lower_case_so_it_can_match():
    assert all(p.needle == p.needle.lower() for p in AGENT_PATTERNS)
