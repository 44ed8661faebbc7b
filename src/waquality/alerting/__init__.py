"""Alerts: rules turn state changes into firing and resolved alerts; an outbox delivers them."""
