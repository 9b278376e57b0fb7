"""A run over a fleet of device nodes through Ray, and one node of that fleet."""
