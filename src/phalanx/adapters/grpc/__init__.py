"""gRPC transport with mutual TLS: wire codec, coordinator server, participant client.

``codec`` is the only module that touches protobuf; ``server.CoordinatorServer`` implements the
:class:`~phalanx.ports.Transport` port on the coordinator side and ``client.CoordinatorClient``
the :class:`~phalanx.ports.CoordinatorLink` port on the participant side.
"""
