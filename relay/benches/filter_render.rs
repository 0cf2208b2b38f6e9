//! Throughput of the relay core's per-destination work on one core: rendering an envelope
//! for a destination, then link filtering it with the destination platform's default rules
//! (QQ: defang every link; WeChat: invites, short links and links; DingTalk: nothing).
//! Run with `cargo bench -p qunbridge --bench filter_render`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qunbridge::core::render::{filter, render};
use qunbridge::core::route::Destination;
use qunbridge::policy::GroupRef;
use qunbridge::policy::{default_rules, FilterRules};
use qunbridge_connectors::{Envelope, Kind, Origin, Platform, Segment, Sender};

/// A typical group message: ~300 bytes of mixed Chinese and ASCII with two links.
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
        sender: Sender { id: "1437420188".into(), name: "Alice | Ops".into(), is_bot: false },
        ts_ms: 1_718_880_000_000,
        kind: Kind::Message,
        segments: vec![
            Segment::text("今天的周会改到下午三点，议程在 https://docs.example.org/weekly/2024-06-20 ，"),
            Segment::Mention { id: "2854196310".into(), name: Some("群桥".into()) },
            Segment::text(" 另外新群 QQ群 123456789 和 t.cn/AbCdEf 都别发到微信里。Please review the notes before the meeting, thanks!"),
        ],
        member: None,
    }
}

/// A destination on `platform` with that platform's default rules.
fn destination(platform: Platform) -> Destination {
    Destination {
        target: GroupRef {
            account: "dest".into(),
            group: "g".into(),
        },
        platform,
        link: "fans".into(),
        format: "[{platform}] {name}: ".into(),
        filter: Arc::new(FilterRules {
            rules: default_rules(platform),
            on_flood: None,
        }),
        media: qunbridge_connectors::media::MediaMode::Passthrough,
        notices: None,
    }
}

fn bench(c: &mut Criterion) {
    let envelope = envelope();
    let mut group = c.benchmark_group("render_and_filter");
    group.throughput(Throughput::Elements(1));
    for platform in [Platform::Qq, Platform::Wechat, Platform::Dingtalk] {
        let destination = destination(platform);
        group.bench_function(platform.as_str(), |b| {
            b.iter(|| {
                let mut outbound = render(black_box(&envelope), &destination);
                let dropped = filter(&mut outbound, &destination, true);
                black_box((outbound, dropped))
            })
        });
    }
    group.bench_function("render_only", |b| {
        let destination = destination(Platform::Dingtalk);
        b.iter(|| black_box(render(black_box(&envelope), &destination)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
