"""The write side: pure decisions over an in-memory fold of the log, and the service that saves them."""
