"""Streams that carry the ledger log to the projections; embedded: an in-process follower of the event store."""

from streams.follower import Follower

__all__ = ["Follower"]
