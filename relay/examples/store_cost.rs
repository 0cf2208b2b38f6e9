//! What the state store costs per relayed `api` → `api` message, on its own: the writes one
//! message makes (the core's dedup key, the destination feed's append, then the egress
//! record with the send-log key, the echo-guard key, the outbox settlement and the
//! message-map copy), issued by
//! many messages at once as the daemon issues them, against a fresh `state.redb` in a
//! temporary directory.
//!
//! `cargo run --release -p qunbridge --example store_cost -- [in-flight] [messages]`
//! (defaults 200 and 30000) prints messages per second, the process's CPU per message and
//! the bytes it wrote to disk per message (`/proc/self/io`). Without the daemon's HTTP,
//! broker and WebSocket work around it, the figures move much less from run to run than the
//! end-to-end benchmark's, which makes this the probe for store changes (docs/BENCHMARKS.md).
//! `SKIP` leaves parts out to see what each costs: `k` the dedup key, `f` the feed append,
//! `m` the message-map copy, `e` the echo-guard key, `s` the whole egress record. Message ids
//! are made as the api connector makes them (the time first, so keys of one group arrive in
//! order); `RANDOM_IDS=1` makes them random, as platforms with random message ids do.
//! `ONEBOT=1` makes the writes a OneBot → OneBot message makes instead: the dedup key with
//! the message's content key, an outbox put (in place of the feed append), then the record.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qunbridge::store::{
    Copy, CopyRecord, OriginEntry, OutboxEntry, PersistentStore, RelayStore, WriteBatch,
    CROSS_BOT_TTL,
};
use qunbridge_connectors::api::{Appended, FeedLog};

/// Time to live of every key written (the daemon's dedup and send-log TTL).
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Time to live of the echo guard's fingerprint (the daemon's echo TTL).
const ECHO: Duration = Duration::from_secs(120);

/// User + system CPU of this process so far, in milliseconds (clock ticks of 10 ms).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |at: usize| {
        fields
            .get(at)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}

/// Bytes this process caused to be written to disk so far.
fn written_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The writes of message `n`, in the daemon's order, each awaited before the next.
async fn relay_one(store: &PersistentStore, n: usize, skip: &str) {
    // As the api connector makes them: the time, then 64 random bits.
    let random = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let id = if std::env::var_os("RANDOM_IDS").is_some() {
        format!("{random:016x}")
    } else {
        format!("api-a:g:{millis:x}-{random:016x}")
    };
    let onebot = std::env::var_os("ONEBOT").is_some();
    let sent = format!("s\u{1f}{id}\u{1f}b\u{1f}g");
    if !skip.contains('k') {
        let mut keys = vec![(format!("i\u{1f}{id}"), DAY)];
        if onebot {
            let second = millis / 1000;
            keys.push((
                format!("c\u{1f}qq\u{1f}g\u{1f}42\u{1f}{second}\u{1f}{random:016x}"),
                CROSS_BOT_TTL,
            ));
        }
        let dedup = WriteBatch {
            keys,
            ..Default::default()
        };
        store.write(dedup).await.expect("dedup write");
    }
    let appended = if onebot {
        let entry = OutboxEntry {
            key: sent.clone(),
            payload: format!(
                r#"{{"text":"message {n}, about as long as a chat line","group":"g"}}"#
            )
            .into_bytes(),
            queued_ms: millis as u64,
        };
        store.outbox_put("b", entry).await.expect("outbox put");
        Appended {
            seq: n as u64,
            fresh: true,
        }
    } else if skip.contains('f') {
        Appended {
            seq: n as u64,
            fresh: true,
        }
    } else {
        store
            .append(
                "b".into(),
                "g".into(),
                format!("{id}\u{1f}g"),
                format!(r#"{{"text":"message {n}, about as long as a chat line"}}"#),
                1000,
            )
            .await
            .expect("feed append")
    };
    if skip.contains('s') {
        return;
    }
    let copies = if skip.contains('m') {
        Vec::new()
    } else {
        vec![CopyRecord {
            origin_key: format!("m\u{1f}a\u{1f}g\u{1f}{id}"),
            origin: OriginEntry {
                account: "a".into(),
                group: "g".into(),
                message_id: id.clone(),
                excerpt: "someone: message".into(),
                copies: Vec::new(),
            },
            copies: vec![Copy {
                account: "b".into(),
                group: "g".into(),
                id: appended.seq.to_string(),
            }],
        }]
    };
    let mut keys = vec![(sent.clone(), DAY)];
    if !skip.contains('e') {
        // The echo guard's fingerprint of the text: a digest, so anywhere in the key space.
        let digest = random.rotate_left(17) ^ 0x5151_5151;
        keys.push((format!("e\u{1f}api\u{1f}g\u{1f}{digest:016x}"), ECHO));
    }
    let record = WriteBatch {
        keys,
        outbox_done: vec![("b".into(), sent)],
        copies,
        ..Default::default()
    };
    store.write(record).await.expect("egress record");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let in_flight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let messages: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30_000);
    let skip = Arc::new(std::env::var("SKIP").unwrap_or_default());
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(PersistentStore::open(dir.path()).expect("store"));
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let (started, cpu_before, written_before) = (Instant::now(), cpu_ms(), written_bytes());
    let mut running = Vec::with_capacity(messages);
    for n in 0..messages {
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let (store, skip) = (store.clone(), skip.clone());
        running.push(tokio::spawn(async move {
            relay_one(&store, n, &skip).await;
            drop(slot);
        }));
    }
    for task in running {
        task.await.expect("message task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_message = |total: f64| total / messages as f64;
    println!(
        "in flight {in_flight}, {messages} messages, skip {skip:?}: {:.0} msg/s, {:.1} µs CPU and {:.1} kB written per message",
        messages as f64 / seconds,
        per_message((cpu_ms() - cpu_before) * 1000.0),
        per_message(written_bytes() - written_before) / 1000.0,
    );
}
