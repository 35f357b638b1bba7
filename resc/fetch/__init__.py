"""Calls to web services for a rule's `fetch`: building the request from an event's
variables (request), the HTTP client with its size and result limits (client), which
answers are retried and how long to wait (retry), and the circuit breaker (breaker). May
import resc.config and resc.core; knows nothing of Redis."""
