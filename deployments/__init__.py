"""Prefect deployment of pokevq: prefect.yaml, automations, and the local stack set-up."""
