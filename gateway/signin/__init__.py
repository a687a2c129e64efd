"""Signing browsers in: passwords and their hashes, signed tokens, lockout after failures,
and the WebSocket upgrade's guards (Origin, sockets per address). See docs/configuration.md
`[auth]` and docs/protocol.md `hello`."""
