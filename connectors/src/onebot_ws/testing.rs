//! Test doubles for the OneBot ingress path: numbered envelopes, so order can be checked, and
//! an [`EnvelopeSink`] whose submits and confirmations a test can hold back, refuse or fail,
//! recording what it was given.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::context::{BoxFuture, Confirmed, EnvelopeSink};
use crate::error::IngressError;
use crate::model::{Envelope, Kind, Origin, Platform, Segment, Sender, ENVELOPE_VERSION};

/// How long a test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The group every test envelope comes from.
pub const GROUP: &str = "735021844";

/// Message `n` of account `qq` in [`GROUP`], saying `m<n>`.
pub fn envelope(n: u64) -> Envelope {
    Envelope {
        v: ENVELOPE_VERSION,
        id: Envelope::make_id("qq", GROUP, &n.to_string()),
        origin: Origin {
            platform: Platform::Qq,
            account: "qq".into(),
            group: GROUP.into(),
            message_id: n.to_string(),
            group_name: None,
        },
        sender: Sender {
            id: "42".into(),
            name: "Bob".into(),
            is_bot: false,
        },
        ts_ms: 1_718_880_000_000,
        kind: Kind::Message,
        segments: vec![Segment::text(format!("m{n}"))],
        member: None,
    }
}

/// A sink a test scripts: submits wait while it is closed, confirmations wait while they are
/// held; the next submits can be refused as busy and chosen confirmations can fail once.
pub struct ScriptedSink {
    /// Submits wait while this is false.
    open: watch::Sender<bool>,
    /// Confirmations wait while this is false.
    confirming: watch::Sender<bool>,
    /// Submits still to refuse with [`IngressError::Busy`].
    busy: AtomicU32,
    /// Refusals handed out.
    refused: AtomicU32,
    /// Message ids whose next confirmation fails.
    fail_once: Mutex<HashSet<String>>,
    /// Message ids of accepted submits, in order (one published twice appears twice).
    submitted: Mutex<Vec<String>>,
    /// Message ids whose confirmation succeeded, in order.
    confirmed: Arc<Mutex<Vec<String>>>,
}

impl ScriptedSink {
    /// An open sink that confirms at once.
    pub fn new() -> Arc<ScriptedSink> {
        Arc::new(ScriptedSink {
            open: watch::Sender::new(true),
            confirming: watch::Sender::new(true),
            busy: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            fail_once: Mutex::new(HashSet::new()),
            submitted: Mutex::new(Vec::new()),
            confirmed: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Opens (true) or closes (false) the sink: submits wait while it is closed.
    pub fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    /// Lets confirmations resolve (true) or holds them back (false).
    pub fn set_confirming(&self, confirming: bool) {
        self.confirming.send_replace(confirming);
    }

    /// Refuses the next `count` submits as busy.
    pub fn refuse_next(&self, count: u32) {
        self.busy.store(count, Ordering::SeqCst);
    }

    /// Fails the next confirmation of message `n`.
    pub fn fail_confirmation_of(&self, n: u64) {
        lock(&self.fail_once).insert(n.to_string());
    }

    /// Refusals handed out so far.
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Message ids of the accepted submits, in order.
    pub fn submitted(&self) -> Vec<u64> {
        numbers(&lock(&self.submitted))
    }

    /// Message ids confirmed, in order.
    pub fn confirmed(&self) -> Vec<u64> {
        numbers(&lock(&self.confirmed))
    }

    /// Waits until `done` holds for the sink, or panics after [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, done: impl Fn(&ScriptedSink) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: submitted {:?}, confirmed {:?}",
                self.submitted(),
                self.confirmed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl EnvelopeSink for ScriptedSink {
    fn submit(&self, envelope: Envelope) -> BoxFuture<'_, Result<Confirmed, IngressError>> {
        Box::pin(async move {
            if self
                .busy
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(IngressError::Busy {
                    retry_after_secs: 1,
                });
            }
            let mut open = self.open.subscribe();
            if open.wait_for(|open| *open).await.is_err() {
                return Err(IngressError::Closed);
            }
            let id = envelope.origin.message_id;
            let fails = lock(&self.fail_once).remove(&id);
            lock(&self.submitted).push(id.clone());
            let mut confirming = self.confirming.subscribe();
            let confirmed = self.confirmed.clone();
            let confirmation: Confirmed = Box::pin(async move {
                if confirming.wait_for(|go| *go).await.is_err() {
                    return Err(IngressError::Closed);
                }
                if fails {
                    return Err(IngressError::Timeout(10));
                }
                lock(&confirmed).push(id);
                Ok(())
            });
            Ok(confirmation)
        })
    }
}

/// A list, recovering from a poisoned lock.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Message ids as the numbers [`envelope`] made them from.
fn numbers(ids: &[String]) -> Vec<u64> {
    ids.iter()
        .map(|id| id.parse().expect("a numbered test envelope"))
        .collect()
}
