"""The Dynamo-style replicated key-value store and the node process."""
