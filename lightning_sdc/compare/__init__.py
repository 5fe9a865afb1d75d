"""Paired multi-seed comparisons (``lightning-sdc compare``): runs, statistics, reports."""
