"""What operators and config authors run besides the daemon: the warnings of `resc check`
(lint), one event traced through the rules (explain), queue lengths for `resc status`
(status, and todo_status for the todo queues and their workers, with their metrics in
todo_metrics), the failed lists for `resc failed` (failed, with its Lua scripts in lua/),
config test cases for `resc test` (case_runner, committed to an in-memory Redis by
case_store) and the instances at work (instances). May import resc.engine, resc.worker
and every layer below them."""
