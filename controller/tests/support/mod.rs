//! Support for the controller's tests: a real etcd from the one launcher of the test
//! suite (`ferrocast_tests::etcd`), started off the runtime's threads, and the
//! controller's view of it (an [`EtcdConfig`] with its TLS files, an [`EtcdClient`]).

pub mod cluster;

use ferrocast_controller::etcd::{EtcdClient, EtcdConfig, EtcdTls};
use ferrocast_tests::etcd::Etcd;
use std::ops::Deref;
use std::time::Duration;

/// A running single-member etcd (dereferences to the launcher's [`Etcd`]).
#[derive(Debug)]
pub struct EtcdServer(Etcd);

impl Deref for EtcdServer {
    type Target = Etcd;
    fn deref(&self) -> &Etcd {
        &self.0
    }
}

// Not every test binary that includes this module uses every item.
#[allow(dead_code)]
impl EtcdServer {
    /// Starts a plaintext member and waits until it is healthy.
    pub async fn start() -> EtcdServer {
        EtcdServer(
            tokio::task::spawn_blocking(|| Etcd::start(1))
                .await
                .unwrap(),
        )
    }

    /// Starts a member that speaks TLS only and requires a client certificate.
    pub async fn start_tls() -> EtcdServer {
        EtcdServer(
            tokio::task::spawn_blocking(|| Etcd::start_tls(1))
                .await
                .unwrap(),
        )
    }

    /// The controller's configuration for this server, with the client certificate when
    /// it speaks TLS.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            tls: self.tls().map(|t| EtcdTls {
                ca: t.ca.clone(),
                identity: Some((t.client_cert.clone(), t.client_key.clone())),
            }),
            ..EtcdConfig::plain(self.endpoint_list())
        }
    }

    /// A client of this server with call deadline `timeout`.
    pub async fn client(&self, timeout: Duration) -> EtcdClient {
        EtcdClient::connect(&self.config(), timeout).await.unwrap()
    }
}
