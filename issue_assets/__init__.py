"""issue_assets: learn which new GitHub issues close within 7 days, point-in-time correct."""

__version__ = "0.1.0"
