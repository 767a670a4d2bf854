//! A thin etcd v3 client over the generated stubs in `ferrocast_proto::etcd`: one gRPC
//! channel balanced over the endpoints, connected lazily (a controller starts while etcd is
//! down, and the data path never waits for it), and every unary call bounded by a deadline.
//! Failures map to [`StoreError`] here and nowhere else.

use crate::store::StoreError;
use ferrocast_proto::etcd::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest,
};
use ferrocast_proto::etcd::v3electionpb::election_client::ElectionClient;
use std::future::Future;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A connection to an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    channel: Channel,
    timeout: Duration,
}

/// Maps a gRPC failure of etcd to a store error.
pub(crate) fn status_error(s: tonic::Status) -> StoreError {
    StoreError::Unavailable(format!("etcd: {:?}: {}", s.code(), s.message()))
}

/// The end of the key range of every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

impl EtcdClient {
    /// A client of the etcd members at `endpoints` (`http://host:port` or `host:port`),
    /// with `timeout` as connect timeout and deadline of every unary call. Connects on
    /// first use; must be called inside a tokio runtime.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable("no etcd endpoint".into()));
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let url = if e.contains("://") {
                e.clone()
            } else {
                format!("http://{e}")
            };
            let ep = Endpoint::from_shared(url)
                .map_err(|err| StoreError::Unavailable(format!("etcd endpoint {e:?}: {err}")))?
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(timeout);
            list.push(ep);
        }
        Ok(EtcdClient {
            channel: Channel::balance_list(list.into_iter()),
            timeout,
        })
    }

    /// The deadline of unary calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The KV service.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// The Lease service.
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    /// The Election service.
    pub fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone())
    }

    /// Runs one unary call under the deadline.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, StoreError> {
        self.bounded(call).await.map(tonic::Response::into_inner)
    }

    /// Grants a lease of at least `ttl` (etcd rounds up to whole seconds and to its own
    /// minimum); returns its id and granted TTL.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), StoreError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let req = LeaseGrantRequest {
            ttl: secs.max(1) as i64,
            id: 0,
        };
        let r = self.call(self.lease().lease_grant(req)).await?;
        if !r.error.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "etcd lease grant: {}",
                r.error
            )));
        }
        Ok((r.id, Duration::from_secs(r.ttl.max(0) as u64)))
    }

    /// Renews a lease once; returns its TTL, or [`StoreError::LeaseExpired`].
    pub async fn keep_alive_once(&self, id: i64) -> Result<Duration, StoreError> {
        let mut lease = self.lease();
        let once = tokio_stream::once(LeaseKeepAliveRequest { id });
        let ttl = self
            .bounded(async move {
                let mut replies = lease.lease_keep_alive(once).await?.into_inner();
                replies.message().await
            })
            .await?
            .map(|r| r.ttl)
            .unwrap_or(0);
        if ttl <= 0 {
            return Err(StoreError::LeaseExpired(id));
        }
        Ok(Duration::from_secs(ttl as u64))
    }

    /// Ends a lease now, deleting its keys; an unknown lease is no error.
    pub async fn revoke(&self, id: i64) -> Result<(), StoreError> {
        let r = self
            .bounded(self.lease().lease_revoke(LeaseRevokeRequest { id }))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(StoreError::Unavailable(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(status_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd: no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
    }
}
