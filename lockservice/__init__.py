"""The Chubby-style lock service replicated with Raft."""
