"""Concurrency plumbing: one value per event loop, and the one registry of keyed tasks
(single flight, background work), cancelled on close."""
