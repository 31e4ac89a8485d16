"""The pure core: types, errors, features, aggregation, privacy, secure aggregation, rounds.

Nothing in here touches files, sockets, clocks, the environment, torch, grpc or sqlite: only the
standard library and numpy. An import-linter contract in pyproject.toml keeps it so.
"""
