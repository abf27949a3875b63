"""Modules that talk to the outside world (S3, Stripe, SMTP, queues)."""
