"""The result record (one schema), the JSONL store, and the merge of rounds and stores."""
