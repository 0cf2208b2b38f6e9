//! Dedup and the echo guard (ARCHITECTURE.md §5), decided in one place: an inbound message is
//! dropped when its envelope id was relayed before (a broker redelivery), when another bot in
//! the same group already reported it (the same content key), when it is what the relay
//! itself sent to that group coming back (the echo fingerprint egress records), or when a copy
//! of it is being relayed right now. How the keys are made is [`crate::store::keys`]'s; what
//! they mean is decided here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use qunbridge_connectors::Envelope;
use tracing::{debug, warn};

use crate::store::held::HeldEntry;
use crate::store::stats::StatsDelta;
use crate::store::{keys, RelayStore, StoreError, WriteBatch};

/// What dedup decided for one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New: relay it. Its keys are held as in progress until [`Dedup::remember`] stores them
    /// (once the outbound publishes are confirmed) or [`Dedup::release`] lets them go.
    Fresh(Vec<String>),
    /// A copy of a message being relayed right now: dropped, but acknowledged only after the
    /// message it copies, because acknowledgements go out in order.
    CopyOfCurrent,
    /// Relayed before, or an echo of what the relay sent: dropped for `reason` (`duplicate`
    /// or `echo`, the drop counter's label) and acknowledged at once.
    Seen(&'static str),
}

/// The core's dedup state: the store (keys of what was relayed, echo fingerprints) and the
/// keys of messages being relayed now. Cloning shares both.
#[derive(Clone)]
pub struct Dedup {
    /// Where relayed keys and echo fingerprints persist, across restarts and processes.
    store: Arc<dyn RelayStore>,
    /// Keys of messages published but not yet acknowledged. A copy that arrives meanwhile (a
    /// broker redelivery after a reconnect, or a second bot's report) is a duplicate even
    /// though the store does not hold its keys yet: they are written only once the outbound
    /// publishes are confirmed, so a crash in between loses nothing.
    in_progress: Arc<Mutex<HashSet<String>>>,
}

impl Dedup {
    /// Dedup over a store, with nothing in progress.
    pub fn new(store: Arc<dyn RelayStore>) -> Dedup {
        Dedup {
            store,
            in_progress: Arc::default(),
        }
    }

    /// Decides whether `envelope` is relayed. A fresh message's keys are held as in progress
    /// from now on. When the store cannot be read, the message is relayed: relaying a possible
    /// duplicate beats stalling the connection (acks go out in order, so an unacknowledged
    /// message would hold up every later one).
    pub async fn check(&self, envelope: &Envelope) -> Verdict {
        // Redelivery (same envelope id) and the same message from a second bot account in the
        // group (same content key; the first is the message's own, the others its
        // neighbouring seconds).
        let mut seen_keys = vec![keys::envelope(&envelope.id)];
        seen_keys.extend(keys::content(envelope));
        if self.any_in_progress(&seen_keys) {
            debug!(message = "Dropping a copy of a message being relayed.", id = %envelope.id);
            return Verdict::CopyOfCurrent;
        }
        let echo = keys::echo_of(envelope);
        let mut checks = seen_keys.clone();
        checks.extend(echo.iter().cloned());
        match self.store.holds_any(&checks).await {
            Ok(true) => {
                if self.is_echo(echo.as_ref()).await {
                    debug!(message = "Dropping an echo of what the relay sent to this group.", id = %envelope.id);
                    return Verdict::Seen("echo");
                }
                debug!(message = "Dropping duplicate.", id = %envelope.id);
                return Verdict::Seen("duplicate");
            }
            Ok(false) => {}
            Err(error) => {
                warn!(message = "Dedup store failed; relaying without the duplicate check.", %error, id = %envelope.id);
            }
        }
        // The envelope id and this message's own content key.
        let own_keys: Vec<String> = seen_keys.into_iter().take(2).collect();
        self.lock().extend(own_keys.iter().cloned());
        Verdict::Fresh(own_keys)
    }

    /// Stores the keys of a message whose outbound publishes were confirmed, so later copies
    /// are dropped. A failure is logged: the outbound messages are with the broker, and
    /// egress's send log still stops a redelivered copy from being sent twice.
    pub async fn remember(&self, keys: &[String], stats: Vec<StatsDelta>) {
        let batch = WriteBatch {
            keys: keys
                .iter()
                .map(|key| (key.clone(), keys::dedup_ttl(key)))
                .collect(),
            stats,
            ..Default::default()
        };
        if let Err(error) = self.store.write(batch).await {
            warn!(message = "Dedup keys not stored.", %error);
        }
    }

    /// Stores the keys of a message with the entries it is held under, in one commit, before
    /// the message is acknowledged: what is held survives a crash, and a redelivered copy is
    /// not held twice.
    ///
    /// # Errors
    /// [`StoreError`] when the write failed (the message is then left for redelivery).
    pub async fn hold(&self, keys: &[String], held: Vec<HeldEntry>) -> Result<(), StoreError> {
        self.store
            .write(WriteBatch {
                keys: keys
                    .iter()
                    .map(|key| (key.clone(), keys::dedup_ttl(key)))
                    .collect(),
                held,
                ..Default::default()
            })
            .await
    }

    /// Takes a message's keys out of the in-progress set: it was acknowledged (its keys are
    /// in the store) or it failed and will be redelivered.
    pub fn release(&self, keys: &[String]) {
        let mut current = self.lock();
        for key in keys {
            current.remove(key);
        }
    }

    /// True when a message with one of these keys is being relayed now.
    fn any_in_progress(&self, keys: &[String]) -> bool {
        let current = self.lock();
        keys.iter().any(|key| current.contains(key))
    }

    /// True when the store holds the echo fingerprint (what the relay sent to this group).
    async fn is_echo(&self, echo: Option<&String>) -> bool {
        match echo {
            Some(echo) => self
                .store
                .holds_any(std::slice::from_ref(echo))
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    /// The in-progress set, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::{Kind, Origin, Platform, Segment, Sender};

    use super::*;
    use crate::store::{MemoryStore, PersistentStore, DEDUP_TTL};

    fn envelope(id: &str, text: &str) -> Envelope {
        Envelope {
            v: 1,
            id: id.into(),
            origin: Origin {
                platform: Platform::Qq,
                account: "qq".into(),
                group: "1".into(),
                message_id: id.into(),
                group_name: None,
            },
            sender: Sender {
                id: "u".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms: 1_718_880_000_000,
            kind: Kind::Message,
            segments: vec![Segment::text(text)],
            member: None,
        }
    }

    #[tokio::test]
    async fn a_redelivery_and_a_second_bots_report_are_dropped_after_a_restart_with_both_keys_held_in_memory(
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Arc::new(PersistentStore::open(dir.path()).expect("open"));
            let dedup = Dedup::new(store.clone());
            let Verdict::Fresh(keys) = dedup.check(&envelope("bot1-7", "same words")).await else {
                panic!("a new message is fresh");
            };
            assert_eq!(keys.len(), 2, "its id and its content key");
            dedup.remember(&keys, Vec::new()).await;
            dedup.release(&keys);
            let counts = store.counts().expect("counts");
            assert_eq!(
                (counts.keys, counts.short_lived_keys),
                (0, 2),
                "the id and the content key live minutes: held in memory, not in the key table"
            );
        }
        let store: Arc<dyn RelayStore> =
            Arc::new(PersistentStore::open(dir.path()).expect("reopen"));
        let dedup = Dedup::new(store);
        assert_eq!(
            dedup.check(&envelope("bot2-9", "same  words")).await,
            Verdict::Seen("duplicate"),
            "the second bot's report of the same message"
        );
        assert_eq!(
            dedup.check(&envelope("bot1-7", "same words")).await,
            Verdict::Seen("duplicate"),
            "a redelivery"
        );
        assert!(matches!(
            dedup.check(&envelope("bot2-10", "other words")).await,
            Verdict::Fresh(_)
        ));
        assert_eq!(
            keys::dedup_ttl(&keys::envelope("bot1-7")),
            crate::store::REDELIVERY_TTL
        );
    }

    #[tokio::test]
    async fn copies_in_progress_then_relayed_ones_then_echoes_are_told_apart() {
        let store: Arc<dyn RelayStore> = Arc::new(MemoryStore::new(100));
        let dedup = Dedup::new(store.clone());
        let Verdict::Fresh(keys) = dedup.check(&envelope("a", "hi")).await else {
            panic!("a new message is fresh");
        };
        assert_eq!(
            dedup.check(&envelope("a", "hi")).await,
            Verdict::CopyOfCurrent
        );
        dedup.remember(&keys, Vec::new()).await;
        dedup.release(&keys);
        assert_eq!(
            dedup.check(&envelope("a", "hi")).await,
            Verdict::Seen("duplicate")
        );
        let echo = keys::echo(Platform::Qq, "1", "sent by the relay").expect("echo key");
        store
            .write(WriteBatch {
                keys: vec![(echo, DEDUP_TTL)],
                copies: Vec::new(),
                ..Default::default()
            })
            .await
            .expect("written");
        assert_eq!(
            dedup.check(&envelope("b", "sent by the relay")).await,
            Verdict::Seen("echo")
        );
    }
}
