"""The pure, typed core: enums, normalised values and typed webhook events. No I/O here."""
