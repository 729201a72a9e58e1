"""Tests of the service (link flow, webhooks)."""
