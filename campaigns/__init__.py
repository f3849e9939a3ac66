"""Reliability and security campaigns: crash, faults, fuzz, limits, security, soak.

Each campaign drives real gateway processes and prints its figures (what was tried, what
survived, what failed). ``python -m campaigns NAME [--long]`` runs one on demand; the test
suite runs the short version of each (``tests/test_campaign_*.py``) and fails on any
failure a campaign records.
"""
