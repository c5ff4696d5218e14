"""Donation and refund receipts by email, exactly once in effect: a transactional outbox (``outbox``) written with
the money's own transaction, a relay in every engine process (``relay``), the message (``rendering``, ``templates/``)
and where it goes (``senders``: SMTP, or ``.eml`` files without one)."""
