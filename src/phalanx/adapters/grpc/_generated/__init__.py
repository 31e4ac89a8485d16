"""Generated protobuf stubs of proto/phalanx/v1 (scripts/gen-proto). Do not edit by hand.

Only :mod:`phalanx.adapters.grpc.codec` imports this package.
"""
