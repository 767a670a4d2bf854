//! Node configuration: one type per role (`OriginArgs`, `EdgeArgs`, `ControllerArgs`,
//! `StandaloneArgs`), each the single source of that role's flags, `FERROCAST_*`
//! environment variables and TOML keys, with the same names everywhere (`--rtmp-listen`,
//! `FERROCAST_RTMP_LISTEN`, `rtmp-listen = "..."`), and its `validate()` into the node
//! libraries' configs before any socket is bound; an error names the field.
//!
//! How one type carries three sources: every role type (and every group it flattens,
//! [`shared`]) derives both `clap::Args` and `serde::Deserialize` (kebab-case, so TOML
//! keys are the flag names; unknown keys refused by the role type, so a key another role
//! reads is refused too, as clap refuses its flag; a `FERROCAST_*` variable of another
//! role is ignored, so one environment may serve several roles). Every field means "not given" when unset (`Option`, an empty
//! list, `false`), so clap fills flags over environment, the file parses into the same
//! type, and [`Layer::under`] lays the first over the second field by field. The
//! `layered!` impls build a struct literal, so a field added to a group without its
//! merge line does not compile. A layering crate (figment, config-rs) was not taken:
//! clap already reads the environment and shows it in `--help`, and what remains is a
//! dozen lines here.
//!
//! Defaults and role-specific meaning (the HTTP port is the origin's, the edge's or the
//! controller's) live in each role's `validate()`, not in the argument types, so "given"
//! stays distinguishable from "defaulted" across the layers.

mod controller;
mod edge;
mod origin;
mod shared;
mod standalone;
#[cfg(test)]
mod tests;

pub use controller::ControllerArgs;
pub use edge::EdgeArgs;
pub use origin::OriginArgs;
pub use standalone::StandaloneArgs;

use anyhow::{bail, Context};
use ferrocast_controller::ControllerConfig;
use ferrocast_edge::EdgeConfig;
use ferrocast_origin::OriginConfig;
use ferrocast_runtime::telemetry::LogFormat;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which node(s) this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// RTMP ingest, packaging, origin HTTP, the QUIC relay.
    Origin,
    /// Viewer HTTP fed from an origin over QUIC.
    Edge,
    /// Origin and edge in one process, on loopback, with generated certificates.
    Standalone,
    /// The controller: cluster state, placement, failover.
    Controller,
}

/// Resolved settings for one process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node id.
    pub node_id: String,
    /// Region.
    pub region: String,
    /// Log format.
    pub log_format: LogFormat,
    /// The origin's configuration (origin and standalone).
    pub origin: OriginConfig,
    /// The edge's configuration (edge and standalone).
    pub edge: EdgeConfig,
    /// Cluster TLS directory, if given.
    pub tls_dir: Option<PathBuf>,
    /// Edge: the origin's QUIC address.
    pub origin_addr: Option<SocketAddr>,
    /// The controller's configuration (controller; standalone embeds one).
    pub controller: ControllerConfig,
    /// Origin and edge: controller gRPC addresses (empty: no controller).
    pub controllers: Vec<String>,
    /// Origin and edge: the host other nodes and viewers reach this node at.
    pub advertise_host: Option<String>,
    /// Edge: the base URL viewers are sent to (no trailing slash).
    pub public_url: Option<String>,
}

/// A value given on a higher layer (flags, then environment) hides the one below it
/// (the file); "not given" lets the lower one through.
trait Layer {
    /// `self` over `lower`.
    fn under(self, lower: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn under(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// A list flag replaces the file's list; it does not add to it.
impl<T> Layer for Vec<T> {
    fn under(self, lower: Self) -> Self {
        if self.is_empty() {
            lower
        } else {
            self
        }
    }
}

/// A switch is on when any layer turns it on (there is no `--no-...`).
impl Layer for bool {
    fn under(self, lower: Self) -> Self {
        self || lower
    }
}

/// `impl Layer` for an argument type, field by field.
macro_rules! layered {
    ($t:ty { $($field:ident),* $(,)? }) => {
        impl $crate::config::Layer for $t {
            fn under(self, lower: Self) -> Self {
                Self { $($field: $crate::config::Layer::under(self.$field, lower.$field)),* }
            }
        }
    };
}
use layered;

/// What every role's argument type offers the loader.
trait RoleArgs: Layer + serde::de::DeserializeOwned {
    /// `--config`, if given.
    fn config_file(&self) -> Option<&Path>;
}

/// Flags and environment (already in `args`) over the `--config` file. First of all it
/// raises the descriptor limit: the HTTP connection caps' defaults derive from it, so it
/// must be the one the node will run with.
fn load<T: RoleArgs>(args: T) -> anyhow::Result<T> {
    ferrocast_runtime::net::raise_descriptor_limit();
    let Some(path) = args.config_file().map(Path::to_owned) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let file: T =
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
    Ok(args.under(file))
}

/// The node id: given, else the host name, else "ferrocast".
fn node_id_or_host(given: Option<String>) -> String {
    given
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "ferrocast".to_owned())
}

/// The node id of an origin or edge with `--tls-dir`: its certificate's
/// `ferrocast://ROLE/ID` for its role when `--node-id` is not given (contract: a node
/// takes its id from its certificate). A `--node-id` the certificate does not name is
/// an error when a controller is reached over TLS, which refuses calls as another node.
fn node_id_from_certificate(
    dir: &Path,
    role: Role,
    given: Option<String>,
    controllers: &[String],
) -> anyhow::Result<Option<String>> {
    use ferrocast_runtime::tls::identity::NodeRole;
    let want = match role {
        Role::Origin => NodeRole::Origin,
        _ => NodeRole::Edge,
    };
    let ids = ferrocast_runtime::tls::TlsFiles::in_dir(dir)
        .identities()
        .context("invalid tls-dir")?;
    let mine: Vec<&str> = ids
        .iter()
        .filter(|i| i.role == want)
        .map(|i| i.id.as_str())
        .collect();
    let tls_controller = controllers.iter().any(|c| c.starts_with("https://"));
    match (given, mine.as_slice()) {
        (None, [id, ..]) => Ok(Some((*id).to_owned())),
        (Some(id), named) if named.is_empty() || named.contains(&id.as_str()) || !tls_controller => {
            Ok(Some(id))
        }
        (Some(id), named) => bail!(
            "invalid node-id: {id:?}, but the certificate in --tls-dir names {want} {}; the controller refuses calls as another node",
            named.join(", ")
        ),
        (None, []) => Ok(None),
    }
}

/// A duration flag: seconds between 0.1 and 3600.
fn seconds(field: &str, v: f64) -> anyhow::Result<Duration> {
    if !(0.1..=3600.0).contains(&v) {
        bail!("invalid {field}: must be between 0.1 and 3600 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// `512M`, `2G`, `65536`, `64K` → bytes.
fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..]
                .trim_end_matches(['B', 'b', 'i'])
                .to_ascii_uppercase();
            let mult = match unit.as_str() {
                "K" => 1u64 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "" => 1,
                other => bail!("unknown unit {other:?} (use K, M or G)"),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a size"))?;
    n.checked_mul(mult).context("size overflows")
}

/// `host:port` → the first address it resolves to.
fn resolve_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("cannot resolve {s:?}"))?
        .next()
        .with_context(|| format!("{s:?} resolves to no address"))
}

/// A loopback address: standalone's default, so nothing listens beyond this machine
/// unless asked to.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Every address: the default of a node role meant to be reached from the network.
fn anywhere(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}
