"""resc's HTTP server, off unless asked for: FastAPI on uvicorn (listener) serving one app
(app) with /metrics, /livez, /readyz, the OpenAPI document and its offline docs, and the
queue API (api): producing events, and claiming tasks as promises kept in Redis (claims,
with its Lua scripts in lua/), behind bearer tokens and allowed queues (access), with the
API's durations (config.durations); its busiest requests (produce, claim, done) are
answered in front of FastAPI when they will succeed (fastpath). It runs beside the daemon
as one of its services (service, which also installs extensions such as the dashboard into
the same app), or alone for `resc serve`, so it may import resc.ops, resc.engine,
resc.worker and every layer below them; the daemon never imports it."""
