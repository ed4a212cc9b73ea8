"""Inbound mail: the SMTP server (`smtp`), the stored message's headers and content (`mime`),
who a recipient address is (`recipients`), and the worker's routing (`routing`)."""
