//! Which origin holds a stream, as the edge's relay client asks it: the cluster's
//! answer ([`ControllerOrigins`], read from the controller's assignments) or a fixed one
//! ([`StaticOrigin`], no controller). It lives with the controller link rather than in
//! the QUIC code: placement and epochs are the cluster's concepts, the relay only
//! follows them.

use crate::{pb, AssignmentTable};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a stream is: the holding origin's relay address and the epoch it holds the
/// stream under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginChoice {
    /// The origin's QUIC relay address.
    pub addr: SocketAddr,
    /// The assignment's epoch: an origin answering with a lower one lost the stream
    /// (it is fenced) and is ignored. 0 accepts any origin (no controller).
    pub epoch: u64,
}

/// Which origin holds a stream: the controller's assignments ([`ControllerOrigins`]),
/// or [`StaticOrigin`] without a controller.
pub trait OriginResolver: Send + Sync + Debug {
    /// The origin holding `stream`, or `None` when no live origin holds it.
    fn resolve(&self, stream: &str) -> Option<OriginChoice>;

    /// A counter bumped whenever an answer of [`resolve`](Self::resolve) may have
    /// changed, so subscriptions move to a new holder at once; `None` if answers never
    /// change.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// Whether the resolver knows the cluster's assignments yet: until then a stream it
    /// cannot name is unavailable for now (the viewer retries), not unknown (which the
    /// edge would remember as absent).
    fn ready(&self) -> bool {
        true
    }

    /// Every stream a live origin holds now, as far as the resolver knows (none for a
    /// resolver that only answers per stream).
    fn streams(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Every stream is on one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticOrigin(pub SocketAddr);

impl OriginResolver for StaticOrigin {
    fn resolve(&self, _stream: &str) -> Option<OriginChoice> {
        Some(OriginChoice {
            addr: self.0,
            epoch: 0,
        })
    }
}

/// Origins as the controller assigns them: a live assignment names the origin's relay
/// address and epoch; an orphaned (holder's lease expired) or released one names none.
#[derive(Debug, Clone)]
pub struct ControllerOrigins(pub Arc<AssignmentTable>);

impl OriginResolver for ControllerOrigins {
    fn resolve(&self, stream: &str) -> Option<OriginChoice> {
        let a = self.0.get(stream)?;
        if a.state() != pb::AssignmentState::Live {
            return None;
        }
        let addr: SocketAddr = a.origin_relay.parse().ok()?;
        Some(OriginChoice {
            addr,
            epoch: a.epoch,
        })
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.0.changes())
    }

    /// Only once a watch delivered the assignments (and while it is open) is a stream
    /// without one known to be absent.
    fn ready(&self) -> bool {
        self.0.is_live()
    }

    fn streams(&self) -> Vec<String> {
        self.0.live_streams()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::assignment_event::Kind;

    #[test]
    fn a_static_origin_holds_every_stream_under_any_epoch() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let r = StaticOrigin(addr);
        assert_eq!(r.resolve("any"), Some(OriginChoice { addr, epoch: 0 }));
        assert!(r.ready());
        assert!(r.changes().is_none(), "its answer never changes");
        assert!(r.streams().is_empty());
    }

    #[test]
    fn only_live_assignments_name_an_origin() {
        let table = Arc::new(AssignmentTable::default());
        let r = ControllerOrigins(table.clone());
        let mut changes = r.changes().unwrap();
        assert!(!r.ready(), "nothing is known before the first snapshot");
        let a = |stream: &str, relay: &str, epoch, state: pb::AssignmentState| pb::Assignment {
            stream: stream.into(),
            origin_id: "o1".into(),
            origin_relay: relay.into(),
            epoch,
            continuity: None,
            state: state.into(),
        };
        table.apply(pb::AssignmentEvent {
            kind: Some(Kind::Snapshot(pb::AssignmentSnapshot {
                assignments: vec![
                    a("live", "127.0.0.1:4433", 2, pb::AssignmentState::Live),
                    a("orphan", "127.0.0.1:4433", 1, pb::AssignmentState::Orphaned),
                    a("bad", "not an address", 1, pb::AssignmentState::Live),
                ],
            })),
        });
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(
            r.resolve("live"),
            Some(OriginChoice {
                addr: "127.0.0.1:4433".parse().unwrap(),
                epoch: 2
            })
        );
        assert_eq!(r.resolve("orphan"), None);
        assert_eq!(r.resolve("bad"), None);
        assert_eq!(r.resolve("unknown"), None);
        assert!(r.ready(), "a snapshot makes the table authoritative");
        table.apply(pb::AssignmentEvent {
            kind: Some(Kind::Upsert(a(
                "orphan",
                "127.0.0.2:4433",
                2,
                pb::AssignmentState::Live,
            ))),
        });
        assert!(changes.has_changed().unwrap());
        assert_eq!(r.resolve("orphan").unwrap().epoch, 2);
        assert_eq!(
            r.streams(),
            ["bad", "live", "orphan"],
            "every live assignment"
        );
    }
}
