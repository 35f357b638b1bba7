"""The vocabulary every layer shares: resc's errors and exit statuses (errors), logging
configured from the environment (logs), the counters and their Prometheus collector
(metrics), the names of the Redis keys resc derives from configured ones (keys), what is
kept about each failed copy beside a failed list (failures), and counts in words (words).
The lowest layer: it imports nothing of resc but the version in `resc/__init__.py`."""
