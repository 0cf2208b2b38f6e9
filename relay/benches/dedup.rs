//! The core's dedup check for one inbound message: make its keys (envelope id, cross-bot
//! content keys, echo fingerprint) and ask the store whether it holds any, on the in-memory
//! store and on the daemon's redb store, each holding 100 000 keys; plus the durable write
//! of one message's keys (one redb commit with fsync, on the temporary directory's disk).
//! Run with `cargo bench -p qunbridge --bench dedup`.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qunbridge::store::{keys, MemoryStore, PersistentStore, RelayStore, WriteBatch, DEDUP_TTL};
use qunbridge_connectors::{Envelope, Kind, Origin, Platform, Segment, Sender};

/// Keys already in the stores.
const HELD: usize = 100_000;

/// Message `n` of a QQ group.
fn envelope(n: usize) -> Envelope {
    Envelope {
        v: 1,
        id: format!("qq-main:735021844:{}", -1_730_113_492 + n as i64),
        origin: Origin {
            platform: Platform::Qq,
            account: "qq-main".into(),
            group: "735021844".into(),
            message_id: format!("{}", -1_730_113_492 + n as i64),
            group_name: None,
        },
        sender: Sender {
            id: "1437420188".into(),
            name: "Alice | Ops".into(),
            is_bot: false,
        },
        ts_ms: 1_718_880_000_000 + n as u64 * 1000,
        kind: Kind::Message,
        segments: vec![Segment::text(format!(
            "message {n}: 今天的周会改到下午三点，please review the notes before the meeting"
        ))],
        member: None,
    }
}

/// What the core checks for a message.
fn checks(envelope: &Envelope) -> Vec<String> {
    let mut checks = vec![keys::envelope(&envelope.id)];
    checks.extend(keys::content(envelope));
    checks.extend(keys::echo_of(envelope));
    checks
}

/// Polls a future that the stores resolve at once (their reads are synchronous).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("store read did not resolve at once"),
    }
}

/// A batch holding the redelivery and content keys of message `n`.
fn batch(n: usize) -> WriteBatch {
    let envelope = envelope(n);
    let mut keys_ = vec![keys::envelope(&envelope.id)];
    keys_.extend(keys::content(&envelope).into_iter().take(1));
    WriteBatch {
        keys: keys_.into_iter().map(|k| (k, DEDUP_TTL)).collect(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let redb = PersistentStore::open(dir.path()).expect("store opens");
    let memory = MemoryStore::new(2 * HELD);
    runtime.block_on(async {
        // Fill in chunks, as the daemon's batched commits would.
        for chunk in (0..HELD).collect::<Vec<_>>().chunks(1000) {
            let mut all = WriteBatch::default();
            for &n in chunk {
                all.keys.extend(batch(n).keys);
            }
            memory.write(all.clone()).await.expect("memory write");
            redb.write(all).await.expect("redb write");
        }
    });
    let held = checks(&envelope(HELD / 2));
    let fresh = checks(&envelope(HELD * 3));

    let mut group = c.benchmark_group("dedup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("keys", |b| {
        let envelope = envelope(7);
        b.iter(|| black_box(checks(black_box(&envelope))))
    });
    let stores: [(&str, &dyn RelayStore); 2] = [("memory", &memory), ("redb", &redb)];
    for (name, store) in stores {
        group.bench_function(format!("check_new_{name}"), |b| {
            b.iter(|| black_box(now(store.holds_any(black_box(&fresh)))))
        });
        group.bench_function(format!("check_seen_{name}"), |b| {
            b.iter(|| black_box(now(store.holds_any(black_box(&held)))))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dedup_write");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let mut n = HELD * 4;
    group.bench_function("redb_commit_one_message", |b| {
        b.iter(|| {
            n += 1;
            runtime.block_on(redb.write(batch(n))).expect("redb write");
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
