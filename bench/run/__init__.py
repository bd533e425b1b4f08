"""Running and caching: the session (select -> run -> check -> compare), the runner, stage keys, the
compute-once store, diagnostics, the result-line record, the cache."""
