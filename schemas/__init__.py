"""The contract every side shares: commands, events, canonical bytes, reasons, limits, DDL."""
