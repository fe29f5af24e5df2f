"""End-to-end recipes (the demo, the selection study, the tokenization study)."""
