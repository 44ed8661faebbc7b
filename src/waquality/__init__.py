"""waquality: watch the quality of a WhatsApp Business Platform presence and act on it.

The package reads as its data flow: ``ingest`` (verify, store raw, acknowledge) → ``process``
(parse, deduplicate, apply state and history) → ``store`` (one schema, SQLite or PostgreSQL)
→ ``api`` (HTTP) and ``cli``. ``domain`` holds the pure, typed core shared by all of them.
"""

__version__ = "0.1.0"
