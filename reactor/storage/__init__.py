"""What is kept: the database connection pool and its queries, the writes that record an
alarm's outcome (clear, note, audit), and the local state file (checkpoint, breakers)."""
