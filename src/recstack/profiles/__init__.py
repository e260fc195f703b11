"""Profiles and segments: per-user aggregates and rule-based segments over the event lake, batch and real time."""
