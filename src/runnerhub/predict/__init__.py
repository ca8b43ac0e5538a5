"""Predictive failure detection: short metric histories, trends extrapolated to a limit."""
