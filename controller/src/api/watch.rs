//! Server-streaming plumbing of the gRPC API: a watcher's stream over the [`Hub`] (a
//! snapshot, then the changes; bounded, with the watcher dropped when it falls too far
//! behind) and a stream fed by a task through a small bounded channel.
//!
//! `WatchAssignments` and `WatchEvents` are served by every replica from its hub. A
//! watcher that falls behind gets `RESOURCE_EXHAUSTED` and its stream ends; while the
//! store is unreachable the stream stays open and silent, and resumes with the difference
//! when it is back.

use crate::hub::{ClusterView, Hub, Update};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::Status;

/// What a server-streaming call answers with.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Messages a watcher may have queued before its connection's flow control holds the
/// sender; past them, updates wait in the hub's bounded backlog.
const WATCH_QUEUE: usize = 64;

/// How long the final error of a watcher stream may wait for room in its queue.
const WATCH_FAREWELL: Duration = Duration::from_secs(1);

/// A watcher's stream over the hub: `first` of the subscription's view, then `each`
/// update's messages. Ends with `RESOURCE_EXHAUSTED` when the watcher fell too far behind,
/// with `UNAVAILABLE` when the replica shuts down, and silently when the client leaves.
pub(crate) fn watch<T, F, E>(hub: Arc<Hub>, first: F, each: E) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(&ClusterView) -> Vec<T> + Send + 'static,
    E: Fn(&Update) -> Vec<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE);
    let closing = hub.closing();
    tokio::spawn(async move {
        let sub = tokio::select! {
            _ = tx.closed() => return,
            s = hub.subscribe() => s,
        };
        let Some(mut sub) = sub else {
            let _ = tx
                .send(Err(Status::unavailable("controller shutting down")))
                .await;
            return;
        };
        drop(hub);
        for m in first(&sub.view) {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
        loop {
            let update = tokio::select! {
                _ = tx.closed() => return,
                _ = closing.cancelled() => Err(Status::unavailable("controller shutting down")),
                r = sub.updates.recv() => match r {
                    Ok(u) => Ok(u),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Err(Status::resource_exhausted(format!(
                            "watcher too slow: {n} updates behind; watch again for a fresh snapshot"
                        )))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        Err(Status::unavailable("controller shutting down"))
                    }
                },
            };
            match update {
                Ok(u) => {
                    for m in each(&u) {
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(status) => {
                    // The queue may be full of what the watcher did not read yet: wait a
                    // little for room, not for ever.
                    let _ = tokio::time::timeout(WATCH_FAREWELL, tx.send(Err(status))).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A stream fed by `f` through a small bounded channel (a slow reader slows the producer).
pub(crate) fn async_stream_of<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_that_does_not_read_is_dropped_with_an_error() {
        use crate::model::{Capacity, Node, Role};
        use crate::store::memory::MemoryStore;
        use crate::store::Store as _;
        let store = Arc::new(MemoryStore::new());
        let hub = Arc::new(Hub::new(store.clone(), Duration::from_millis(200), 2));
        hub.poll_once().await.unwrap();
        // Each update is more than the watcher's queue holds.
        let mut stream = watch(
            hub.clone(),
            |_: &ClusterView| vec![0u32],
            |u: &Update| vec![1u32; WATCH_QUEUE + 10 * u.events.len()],
        );
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            0,
            "the snapshot first"
        );
        for i in 0..5 {
            let node = Node {
                id: format!("n{i}"),
                role: Role::Edge,
                region: "eu".into(),
                relay_addr: String::new(),
                http_url: String::new(),
                rtmp_addr: String::new(),
                capacity: Capacity::default(),
            };
            store
                .register_node(node, Duration::from_secs(30))
                .await
                .unwrap();
            hub.poll_once().await.unwrap();
        }
        let mut read = 0;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => read += 1,
                    Some(Err(s)) => return Some(s),
                    None => return None,
                }
            }
        })
        .await
        .expect("the stream ends");
        let status = end.expect("with an error");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            read < 5 * (WATCH_QUEUE + 10),
            "dropped before the end: {read}"
        );
    }
}
