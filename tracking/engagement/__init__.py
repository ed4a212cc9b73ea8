"""Open and click tracking: signed pixel and click URLs, the HTML rewriting that puts them in
outgoing mail, the endpoints that answer them, and telling people from machines.

- `tokens`: the one owner of signing (what a pixel or click URL names).
- `rewrite`: `html_add_tracking` (and the optional `text_add_tracking`).
- `content` / `mime`: the tracked content of API mail, and of forwarded/relayed MIME, for
  `tracking.delivery.compose.message_outgoing_bytes`, where tracking goes in.
- `classify`: the tables of image proxies, link scanners and timings that make a hit automated.
- `recorder`: the write path (hits answered at once, written in batches).
- `events`: what the message detail shows of them.
- `views` / `urls`: `/t/o/<token>.gif` and `/t/c/<token>`.
"""
