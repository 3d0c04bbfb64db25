"""Alerts: notification and reporting."""
