"""Talking to Redis, the part every client of resc shares: redis-py's errors turned into
resc's, the backoff between reconnections, and URLs redacted for logs (edge). May import
resc.config and resc.core."""
