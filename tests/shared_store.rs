//! The shared (Redis) state store against a real redis-server the test starts: the same
//! behaviour the relay relies on from the embedded store (keys with a time to live, batches
//! applied whole, the message map, idempotent `api` feed appends), plus claims that let two
//! relay-core processes tell a message one of them is handling.

use std::sync::Arc;
use std::time::Duration;

use qunbridge::store::{keys, Copy, CopyRecord, OriginEntry, RedisStore, RelayStore, WriteBatch};
use qunbridge_connectors::api::{Appended, FeedLog};
use qunbridge_tests::Redis;

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_map_feeds_and_claims_behave_as_the_relay_expects() {
    let redis = Redis::start().await;
    let store = Arc::new(
        RedisStore::connect(&redis.url(), "qb-test:")
            .await
            .expect("connects"),
    );

    // Keys with a time to live.
    store
        .write(WriteBatch {
            keys: vec![
                ("short".into(), Duration::from_millis(50)),
                ("long".into(), Duration::from_secs(60)),
            ],
            copies: Vec::new(),
            ..Default::default()
        })
        .await
        .expect("write");
    assert!(store
        .holds_any(&owned(&["nope", "short"]))
        .await
        .expect("read"));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        !store.holds_any(&owned(&["short"])).await.expect("read"),
        "expired"
    );
    assert!(store.holds_any(&owned(&["long"])).await.expect("read"));

    // The message map: two copies recorded in two batches come back together.
    let origin_key = keys::origin("qq", "1", "100");
    let origin = OriginEntry {
        account: "qq".into(),
        group: "1".into(),
        message_id: "100".into(),
        excerpt: "Ann: hi".into(),
        copies: Vec::new(),
    };
    for (account, id) in [("wx", "w-7"), ("hub", "3")] {
        store
            .write(WriteBatch {
                keys: Vec::new(),
                copies: vec![CopyRecord {
                    origin_key: origin_key.clone(),
                    origin: origin.clone(),
                    copies: vec![Copy {
                        account: account.into(),
                        group: "g".into(),
                        id: id.into(),
                    }],
                }],
                ..Default::default()
            })
            .await
            .expect("write");
    }
    let entry = store
        .origin(&origin_key)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(entry.excerpt, "Ann: hi");
    let ids: Vec<&str> = entry.copies.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["3", "w-7"]);
    assert_eq!(
        store
            .origin_of_copy(&keys::origin("wx", "g", "w-7"))
            .await
            .expect("read"),
        Some(origin_key.clone())
    );

    // Claims: a second holder is refused; the holder itself may claim again.
    let claimed = owned(&["c:content-key"]);
    assert!(store
        .claim(&claimed, "env-1", Duration::from_secs(5))
        .await
        .expect("claim"));
    assert!(!store
        .claim(&claimed, "env-2", Duration::from_secs(5))
        .await
        .expect("claim"));
    assert!(store
        .claim(&claimed, "env-1", Duration::from_secs(5))
        .await
        .expect("claim"));

    // Feeds: idempotent appends, trimmed, readable after a reconnect with the same epoch.
    let first = store
        .append("api".into(), "g".into(), "k1".into(), "e1".into(), 2)
        .await
        .expect("append");
    assert_eq!(
        first,
        Appended {
            seq: 1,
            fresh: true
        }
    );
    let again = store
        .append("api".into(), "g".into(), "k1".into(), "e1".into(), 2)
        .await
        .expect("append");
    assert_eq!(
        again,
        Appended {
            seq: 1,
            fresh: false
        }
    );
    for n in 2..=4 {
        store
            .append(
                "api".into(),
                "g".into(),
                format!("k{n}"),
                format!("{{\"n\":{n}}}"),
                2,
            )
            .await
            .expect("append");
    }
    let epoch = store.epoch();
    let reconnected = RedisStore::connect(&redis.url(), "qb-test:")
        .await
        .expect("connects");
    assert_eq!(reconnected.epoch(), epoch);
    let recent = tokio::task::spawn_blocking(move || reconnected.recent("api", "g", 10))
        .await
        .expect("joined")
        .expect("recent");
    assert_eq!(
        recent,
        (
            vec![(3, "{\"n\":3}".to_owned()), (4, "{\"n\":4}".to_owned())],
            5
        )
    );
}

/// One store of each kind, for behaviour that must be the same on all three: Redis (on a
/// redis-server of its own), the embedded redb store in `dir`, and memory.
struct EveryStore {
    /// Keeps the redis-server running.
    _redis: Redis,
    /// The embedded store's directory, for reopening it as a restart would.
    dir: tempfile::TempDir,
    /// The stores, Redis first.
    stores: Vec<Box<dyn RelayStore>>,
}

impl EveryStore {
    /// The three stores; the Redis keys start with `prefix`.
    async fn start(prefix: &str) -> EveryStore {
        let redis = Redis::start().await;
        let shared = RedisStore::connect(&redis.url(), prefix)
            .await
            .expect("connects");
        let dir = tempfile::tempdir().expect("tempdir");
        let embedded = qunbridge::store::PersistentStore::open(dir.path()).expect("opens");
        EveryStore {
            _redis: redis,
            dir,
            stores: vec![
                Box::new(shared),
                Box::new(embedded),
                Box::new(qunbridge::store::MemoryStore::new(100)),
            ],
        }
    }

    /// Drops every store and opens the embedded one again, as a restart would.
    fn reopen_embedded(mut self) -> qunbridge::store::PersistentStore {
        self.stores.clear();
        qunbridge::store::PersistentStore::open(self.dir.path()).expect("reopens")
    }
}

/// The outbox semantics egress relies on, the same on every store: a message is put once,
/// not put when it was sent already, read back oldest first, and leaves with its settle.
async fn outbox_behaves_as_egress_expects(store: &dyn RelayStore) {
    use qunbridge::store::OutboxEntry;
    let entry = |key: &str| OutboxEntry {
        key: key.to_owned(),
        payload: format!("{{\"k\":\"{key}\"}}").into_bytes(),
        queued_ms: 1_000,
    };
    assert!(store.outbox_put("hub", entry("a")).await.expect("put"));
    assert!(store.outbox_put("hub", entry("b")).await.expect("put"));
    assert!(
        !store.outbox_put("hub", entry("a")).await.expect("put"),
        "a redelivered message is not put twice"
    );
    assert!(store.outbox_put("other", entry("a")).await.expect("put"));
    // A message already in the send log (sent) is not put.
    store
        .write(WriteBatch {
            keys: vec![("sent-c".into(), Duration::from_secs(60))],
            ..Default::default()
        })
        .await
        .expect("write");
    assert!(!store.outbox_put("hub", entry("sent-c")).await.expect("put"));
    let waiting = store.outbox("hub").await.expect("read");
    let keys: Vec<&str> = waiting.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"], "oldest first, per account");
    assert_eq!(waiting[0], entry("a"), "read back as put");
    store
        .write(WriteBatch {
            keys: vec![("a".into(), Duration::from_secs(60))],
            outbox_done: vec![("hub".into(), "a".into())],
            ..Default::default()
        })
        .await
        .expect("settle");
    let keys: Vec<String> = store
        .outbox("hub")
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["b"], "a settled message leaves the outbox");
    assert_eq!(store.outbox("other").await.expect("read").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_behaves_alike_on_redis_redb_and_memory() {
    let every = EveryStore::start("qb-outbox:").await;
    for store in &every.stores {
        outbox_behaves_as_egress_expects(store.as_ref()).await;
    }
    // The embedded store keeps it across a reopen (a restart).
    let reopened = every.reopen_embedded();
    assert_eq!(reopened.outbox("hub").await.expect("read").len(), 1);
}

/// Five days of one group, each day's row with 10 messages and two sender digests, then a
/// sweep with caps of 3 rows and 4 digests (and an age limit that keeps all five days): the
/// three newest rows stay, and the newest digests.
async fn stats_sweeps_keep_the_newest_days(store: &dyn RelayStore, redis: bool) {
    use qunbridge::store::stats::{DayCounts, StatsDelta, StatsSweep};
    let deltas = (100..105)
        .map(|day| StatsDelta {
            account: "qq".into(),
            group: "735021844".into(),
            day,
            counts: DayCounts {
                messages: 10,
                ..Default::default()
            },
            senders: [format!("a{day}"), format!("b{day}")].into(),
        })
        .collect();
    store
        .write(WriteBatch {
            stats: deltas,
            ..Default::default()
        })
        .await
        .expect("write");
    store
        .write(WriteBatch {
            stats_sweep: Some(StatsSweep {
                rows_before: 50,
                senders_before: 50,
                max_rows: 3,
                max_digests: 4,
            }),
            ..Default::default()
        })
        .await
        .expect("sweep");
    let days: Vec<i64> = store
        .stats_rows(0, 200)
        .await
        .expect("rows")
        .into_iter()
        .map(|row| row.day)
        .collect();
    assert_eq!(days, [102, 103, 104], "the oldest rows went first");
    let senders = store
        .stats_senders("qq", "735021844", 0, 200)
        .await
        .expect("senders");
    let kept: Vec<(i64, usize)> = senders
        .iter()
        .map(|(day, digests)| (*day, digests.len()))
        .collect();
    if redis {
        // Redis caps digest sets (group-days) at the row cap.
        assert_eq!(kept, [(102, 2), (103, 2), (104, 2)]);
    } else {
        assert_eq!(kept, [(103, 2), (104, 2)], "4 digests: the newest days'");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_health_tables_are_capped_alike_on_redis_redb_and_memory() {
    let every = EveryStore::start("qb-stats:").await;
    for (index, store) in every.stores.iter().enumerate() {
        stats_sweeps_keep_the_newest_days(store.as_ref(), index == 0).await;
    }
}

/// A held message in the same batch as its dedup key; a second one later; the first taken
/// out by id; an unknown id taken out is no error.
async fn held_entries_behave_as_moderation_expects(store: &dyn RelayStore) {
    use qunbridge::store::held::HeldEntry;
    let envelope: qunbridge_connectors::Envelope = serde_json::from_value(serde_json::json!({
        "v": 1, "id": "qq:735021844:m1",
        "origin": {"platform": "qq", "account": "qq", "group": "735021844", "message_id": "m1"},
        "sender": {"id": "10001", "name": "小明"}, "ts_ms": 1_764_800_000_000u64,
        "kind": "message", "segments": [{"type": "text", "text": "兼职刷单日结"}]
    }))
    .expect("an envelope");
    let held = |id: &str, held_ms: u64| HeldEntry {
        id: id.into(),
        account: "wx".into(),
        group: "20993411775@chatroom".into(),
        link: "fans".into(),
        rule: "ads".into(),
        held_ms,
        envelope: envelope.clone(),
    };
    store
        .write(WriteBatch {
            keys: vec![("seen:m1".into(), Duration::from_secs(60))],
            held: vec![held("h7k2", 2_000)],
            ..Default::default()
        })
        .await
        .expect("write");
    assert!(store.holds_any(&owned(&["seen:m1"])).await.expect("read"));
    store
        .write(WriteBatch {
            held: vec![held("a1b2", 1_000)],
            ..Default::default()
        })
        .await
        .expect("write");
    let listed = store.held().await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a1b2", "h7k2"], "oldest first");
    assert_eq!(listed[1], held("h7k2", 2_000), "kept whole");
    store
        .write(WriteBatch {
            held_done: vec!["a1b2".into(), "never-held".into()],
            ..Default::default()
        })
        .await
        .expect("write");
    let ids: Vec<String> = store
        .held()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["h7k2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_behave_alike_on_redis_redb_and_memory_and_survive_a_restart() {
    let every = EveryStore::start("qb-held:").await;
    for store in &every.stores {
        held_entries_behave_as_moderation_expects(store.as_ref()).await;
    }
    let reopened = every.reopen_embedded();
    let ids: Vec<String> = reopened
        .held()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["h7k2"], "a held message survives a restart");
}
