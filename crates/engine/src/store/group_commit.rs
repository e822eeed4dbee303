//! Group commit for the webhook inbox: one task stores every delivery waiting at the moment in
//! one transaction ([`super::InboxStore::put_events`]), so a burst of webhooks costs one commit
//! per group rather than one per webhook (and concurrent writers never queue on the database's
//! write lock). No delivery is answered before the commit that holds it: a caller learns
//! whether its event was stored only once it is. The queue in front of the task is bounded:
//! when it is full, [`InboxWriter::put`] refuses at once, and the receiver tells the sender to
//! come back later, so a burst never holds more than `capacity` bodies in memory.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{InboxEvent, Store, StoreError};

/// Events stored per transaction at most: bounds a commit's duration (and so the wait of the
/// deliveries queued behind it), not the throughput, which grows with the group.
pub const MAX_GROUP: usize = 512;

/// Why an event was not stored. Every case leaves the event with its sender.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// `capacity` deliveries are already waiting for their commit.
    #[error("{0} deliveries are already waiting to be stored")]
    Full(usize),
    /// The group's transaction failed (shared by every event of the group).
    #[error("{0}")]
    Store(Arc<StoreError>),
    /// The writer task ended (the process is stopping).
    #[error("the inbox writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<bool, PutError>>;

/// The front of the group-commit task; cheap to clone.
#[derive(Clone)]
pub struct InboxWriter {
    queue: mpsc::Sender<(InboxEvent, Reply)>,
    capacity: usize,
}

impl InboxWriter {
    /// Starts the task on the current runtime. It ends once every `InboxWriter` is dropped,
    /// after storing what was queued.
    pub fn spawn(store: Arc<dyn Store>, capacity: usize) -> (InboxWriter, tokio::task::JoinHandle<()>) {
        let capacity = capacity.max(1);
        let (queue, rx) = mpsc::channel(capacity);
        (InboxWriter { queue, capacity }, tokio::spawn(write_groups(store, rx)))
    }

    /// Stores `event` with whatever else is waiting; true when it was new, false when its
    /// `unique_id` was stored before. Refused at once with [`PutError::Full`] when the queue is.
    ///
    /// # Errors
    /// See [`PutError`]; the event is not stored in any of them.
    pub async fn put(&self, event: InboxEvent) -> Result<bool, PutError> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send((event, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PutError::Full(self.capacity),
            mpsc::error::TrySendError::Closed(_) => PutError::Stopped,
        })?;
        answer.await.unwrap_or(Err(PutError::Stopped))
    }

    /// Deliveries waiting for their commit now.
    pub fn waiting(&self) -> usize {
        self.capacity - self.queue.capacity()
    }
}

/// Takes everything queued (up to [`MAX_GROUP`]), stores it in one transaction, answers each
/// caller, and goes again. Groups form by themselves: what arrives during a commit is the next
/// group, so nothing waits for a timer.
async fn write_groups(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(InboxEvent, Reply)>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let (events, replies): (Vec<InboxEvent>, Vec<Reply>) = group.drain(..).unzip();
        match store.put_events(&events).await {
            Ok(stored) => {
                for (reply, new) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(new));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(PutError::Store(Arc::clone(&e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(id: &str) -> InboxEvent {
        InboxEvent {
            unique_id: id.into(),
            source: "pendo".into(),
            kind: "npsSubmitted".into(),
            received_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            body: serde_json::json!({"uniqueId": id}),
        }
    }

    /// Deliveries arriving together are stored together, each told whether it was new (a
    /// repeat inside one group included), and every one of them is in the store once answered.
    #[tokio::test]
    async fn concurrent_deliveries_are_stored_and_answered_each() {
        let store = super::super::open("sqlite::memory:").await.unwrap();
        let (writer, task) = InboxWriter::spawn(Arc::clone(&store), 1_000);
        let puts: Vec<_> = (0..300).map(|i| writer.put(event(&format!("e{}", i % 250)))).collect();
        let answers = futures_util::future::join_all(puts).await;
        let new = answers.iter().filter(|a| matches!(a, Ok(true))).count();
        let repeats = answers.iter().filter(|a| matches!(a, Ok(false))).count();
        assert_eq!((new, repeats), (250, 50), "{answers:?}");
        assert_eq!(store.inbox_counts().await.unwrap().pending, 250);
        drop(writer);
        task.await.unwrap();
    }

    /// A full queue refuses at once rather than hold another body in memory.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let store = super::super::open("sqlite::memory:").await.unwrap();
        let (writer, _task) = InboxWriter::spawn(store, 2);
        // The test runtime has one thread: the writer task does not run between these polls.
        use futures_util::FutureExt as _;
        let (mut a, mut b) = (Box::pin(writer.put(event("a"))), Box::pin(writer.put(event("b"))));
        assert!(a.as_mut().now_or_never().is_none() && b.as_mut().now_or_never().is_none(), "queued, not answered");
        let refused = writer.put(event("c")).now_or_never();
        assert!(matches!(refused, Some(Err(PutError::Full(2)))), "{refused:?}");
        let (a, b) = tokio::join!(a, b);
        assert!(matches!(a, Ok(true)) && matches!(b, Ok(true)), "{a:?} {b:?}");
    }
}
