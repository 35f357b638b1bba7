"""resc's HTTP server, off unless asked for: today the listener with /metrics, /livez and
/readyz (listener). It runs beside the daemon as one of its services, so it may import
resc.ops, resc.engine, resc.worker and every layer below them; the daemon never imports
it."""
