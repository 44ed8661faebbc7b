"""The dashboard: server-rendered pages of what needs attention, numbers, templates, alerts and
response times, behind a login (the API token or a configured password)."""
