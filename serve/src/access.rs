//! Playback access on the viewer path: the rule itself lives once, in
//! [`ferrocast_agent::access`], for every node that serves viewers. Each node feeds it
//! the controller's `WatchAccess` snapshots (see the `ferrocast` binary), an edge is not
//! ready until the first one arrives, and [`crate::http`] passes every viewer request
//! through the gate before routing.

use ferrocast_runtime::http::Response;
use http::Uri;
use std::borrow::Cow;

pub use ferrocast_agent::access::{forbidden, PlaybackAccess, RulesSource};

/// Checks a viewer request: `Ok` with the path to route (any `/t/{token}` prefix
/// removed), or the 403 (or 404) to answer.
pub fn gate<'a>(access: &PlaybackAccess, uri: &'a Uri) -> Result<Cow<'a, str>, Box<Response>> {
    access.gate(uri).map(|a| a.path)
}
