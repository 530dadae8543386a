"""Knowing before users do: alerts, worker presence and canary dispatches (issue 12)."""
