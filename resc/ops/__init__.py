"""What operators and config authors run besides the daemon: the warnings of `resc check`
(lint), one event traced through the rules (explain), queue lengths for `resc status`
(status), and config test cases for `resc test` (case_runner, committed to an in-memory
Redis by case_store). May import resc.engine, resc.worker and every layer below them."""
