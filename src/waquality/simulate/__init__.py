"""A simulated business on the WhatsApp Business Platform, for demos, load tests and backfills.

Deterministic from a seed, and delivered through the real paths: signed webhooks to the
receiver, outbound messages logged through the API, phone numbers and templates served by the
fake Graph API for the poller. The data flows through the modules in this order:

``world``     the business: WABAs, numbers, templates, customers, journeys, the experiment
``story``     the scripted quality story over the days (and the management webhooks it sends)
``script``    one conversation as it unfolds: the messages both sides send, with their statuses
``journeys``  how customers move through order support, booking, campaigns and notifications
``wire``      webhook payloads as Meta shapes them, batched, duplicated and out of order
``traffic``   pure: world + story + time range → a time-ordered stream of deliveries
``records``   the deliveries and their JSON-lines form (``waquality simulate``)
``deliver``   I/O: signs and POSTs bodies, logs outbound messages, changes the fake Graph API
``demo``      orchestration: database, server, fake Graph API, backfill, then live traffic
"""
