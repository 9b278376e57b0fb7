"""Load scenarios: single-stream, offline and server grammar, their load generator and worker."""
