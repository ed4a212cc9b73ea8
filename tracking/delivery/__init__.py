"""Delivery of messages straight to the recipient's MX: the state machine, claims, MIME,
VERP return paths, MX lookup and SMTP sessions."""
