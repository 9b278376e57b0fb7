"""The suite: its YAML schema with line numbers, plugins, and expansion into cells."""
