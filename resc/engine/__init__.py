"""The daemon: rules that turn an event into results (rules), the watcher loop that takes
events, processes and commits them (watcher), its Redis store and the Lua scripts beside
it in lua/ (store), the threads that run fetches and can be abandoned at a stop (pool),
each watcher's instance with its own taken list, heartbeat and recovery of dead
instances (instances), the process that runs the watchers, reloads and stops (daemon),
and its sweep of dedup set members older than their set_ttl (expiry). May import
resc.fetch, resc.connection, resc.config and resc.core; never resc.worker, which is its
peer, nor anything above."""
