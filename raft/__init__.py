"""Raft consensus: a sans-I/O core, durable storage and an asyncio driver."""
