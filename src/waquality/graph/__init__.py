"""Meta's Graph API: the client, the poller and a fake for tests and demos."""
