"""Running a suite: the plan, fresh workers and their typed protocol, rounds, resume, progress."""
