"""The config: its pydantic models (models), reading Hjson and JSON files with the line of
every value (source), loading with located errors and cross-field checks (load), the
`${name}` patterns (patterns), rule regexes in the original's syntax (regex_syntax, which
translates it) on RE2 (regex), the shape of config test cases (cases), the todo queues the
makes name (todo), and values cut to a readable length in messages (text). Pure: no
Redis, no network. May import only resc.core."""
