"""Workloads: what one trial is. `generate`: one request to a decoder LLM (fixed prompt ids, forced output
length, fresh KV cache), timed token by token on each runtime.
"""
