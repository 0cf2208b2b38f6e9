//! JSON encoding and decoding of the MQTT payloads: the inbound [`Envelope`] (ingress
//! encodes, the core decodes) and the rendered [`Outbound`] (the core encodes, egress
//! decodes), each once per message and hop.
//! Run with `cargo bench -p qunbridge --bench envelope`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qunbridge_connectors::{Envelope, Kind, Origin, Outbound, Platform, Segment, Sender};

/// A typical group message: text, a mention, an image, a reply.
fn envelope() -> Envelope {
    Envelope {
        v: 1,
        id: "qq-main:735021844:-1730113492".into(),
        origin: Origin {
            platform: Platform::Qq,
            account: "qq-main".into(),
            group: "735021844".into(),
            message_id: "-1730113492".into(),
            group_name: Some("Ops".into()),
        },
        sender: Sender {
            id: "1437420188".into(),
            name: "Alice | Ops".into(),
            is_bot: false,
        },
        ts_ms: 1_718_880_000_000,
        kind: Kind::Message,
        segments: vec![
            Segment::text("今天的周会改到下午三点，议程在群公告里，"),
            Segment::Mention {
                id: "2854196310".into(),
                name: Some("群桥".into()),
            },
            Segment::text(" please review the notes before the meeting, thanks!"),
        ],
        member: None,
    }
}

/// The same message rendered for one destination.
fn outbound(envelope: &Envelope) -> Outbound {
    let prefix = "[QQ] Alice | Ops: ".to_owned();
    let text = format!(
        "{prefix}今天的周会改到下午三点，议程在群公告里，@群桥 please review the notes before the meeting, thanks!"
    );
    let mut segments = vec![Segment::text(prefix.clone())];
    segments.extend(envelope.segments.iter().cloned());
    Outbound {
        v: 1,
        id: envelope.id.clone(),
        link: "fans".into(),
        group: "20993411775@chatroom".into(),
        kind: Kind::Message,
        origin: envelope.origin.clone(),
        sender: envelope.sender.clone(),
        ts_ms: envelope.ts_ms,
        prefix,
        text,
        segments,
    }
}

fn bench(c: &mut Criterion) {
    let envelope = envelope();
    let outbound = outbound(&envelope);
    let envelope_json = serde_json::to_vec(&envelope).expect("encodes");
    let outbound_json = serde_json::to_vec(&outbound).expect("encodes");
    let mut group = c.benchmark_group("envelope_json");
    group.throughput(Throughput::Elements(1));
    group.bench_function("envelope_encode", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&envelope))))
    });
    group.bench_function("envelope_decode", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<Envelope>(black_box(
                &envelope_json,
            )))
        })
    });
    group.bench_function("outbound_encode", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&outbound))))
    });
    group.bench_function("outbound_decode", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<Outbound>(black_box(
                &outbound_json,
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
