"""Tickets: a support state machine with SLA due times and an audit trail."""
