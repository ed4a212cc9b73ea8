"""Open and click tracking: signed pixel and click URLs, the HTML rewriting that puts them in
outgoing mail, the endpoints that answer them, and telling people from machines.

- `tokens`: the one owner of signing (what a pixel or click URL names).
- `rewrite`: `html_add_tracking` (and the optional `text_add_tracking`) at send time.
- `classify`: the table of image proxies, link scanners and timings that make a hit automated.
- `recorder`: the write path (first read at once, events in batches).
- `events`: what the message detail shows.
- `views` / `urls`: `/t/o/<token>.gif` and `/t/c/<token>`.
"""
