//! The controller's health as it follows the store: while the store is unreachable the
//! controller is degraded, not dead. gRPC health reports `NodeService` (and the server as
//! a whole) `NOT_SERVING` because writes fail, `OperatorService` stays `SERVING` (reads
//! answer from the last good view), and `ferrocast_controller_store_up` is 0. (`/readyz`
//! says `degraded` then: [`crate::admin_http`].)

use crate::grpc::NODE_SERVICE;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// Follows the store's reachability into the gauge and gRPC health until `cancel`.
pub async fn follow_store(
    mut up: tokio::sync::watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    gauge: Gauge,
    cancel: CancellationToken,
) {
    use tonic_health::ServingStatus;
    loop {
        let now = *up.borrow_and_update();
        gauge.set(i64::from(now));
        let status = if now {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // Writes need the store; reads (the operator API) are served from the last view.
        health.set_service_status(NODE_SERVICE, status).await;
        health.set_service_status("", status).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = up.changed() => if r.is_err() { return },
        }
    }
}
