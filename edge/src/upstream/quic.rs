//! QUIC upstream: arriving with the relay.
