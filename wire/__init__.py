"""What the client and the servers both speak, beneath both (imports protocols and protos only).

* :mod:`wire.options`: gRPC channel/server options and transport limits.
* :mod:`wire.tls`: mutual-TLS credentials, channels and certificate-name conventions.
* :mod:`wire.bundle`: named tensors + public metadata streamed as chunked frames.
* :mod:`wire.identity`: public user identities (ids derived from the public keys).
* :mod:`wire.signing`: canonical encoding of Ed25519-signed requests; the deployment id.
* :mod:`wire.key_delivery`: AES keys as RSS words, HPKE-sealed key-share pairs.
* :mod:`wire.audit`: the hash-chained audit entry format and the cross-server chain check.
"""
