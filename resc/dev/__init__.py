"""For development and trying resc out: a private Redis server in a child process
(embedded, private_redis), a Redis Cluster of them for the tests and the bench
(cluster), and `resc demo` with its live view (demo, demo_view). May
import every layer below resc.commands."""
