//! Where the edge gets its streams from: origins over QUIC ([`quic`]). The trait and its
//! events live with the serving path ([`ferrocast_serve::upstream`]).

pub mod quic;
