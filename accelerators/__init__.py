"""Batched hashing and verification kernels, each with a CPU reference path. Imports none of the project."""
