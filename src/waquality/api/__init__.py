"""The HTTP API (JSON, bearer token) and the ASGI wiring around the webhook receiver."""
