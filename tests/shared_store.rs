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
