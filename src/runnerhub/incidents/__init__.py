"""Failover and incident records: what failed, when, what was done, when it was back."""
