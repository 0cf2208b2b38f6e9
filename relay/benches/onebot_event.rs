//! Decoding a OneBot v11 group message event (NapCat's shape, array format, ~110 bytes of
//! text), what ingress does for every message a OneBot account receives.
//! Run with `cargo bench -p qunbridge --bench onebot_event`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qunbridge_connectors::onebot11::event::DecodeContext;
use qunbridge_connectors::onebot11::message_event::decode_frame;
use qunbridge_connectors::Platform;

/// A group message event as NapCat posts it.
const EVENT: &str = r#"{"time":1733400000,"self_id":2854196310,"post_type":"message","message_type":"group","sub_type":"normal","message_id":-1730113400,"message_seq":52321,"real_id":52321,"group_id":735021844,"user_id":1437420188,"anonymous":null,"message":[{"type":"text","data":{"text":"今天的周会改到下午三点，议程见群公告。Please review the notes before the meeting, thanks!"}}],"raw_message":"今天的周会改到下午三点，议程见群公告。Please review the notes before the meeting, thanks!","font":14,"sender":{"user_id":1437420188,"nickname":"Alice","card":"Alice | Ops","role":"member"},"message_format":"array"}"#;

fn bench(c: &mut Criterion) {
    let no_other_bot = |_: &str| false;
    let cx = DecodeContext {
        account: "qq-main",
        platform: Platform::Qq,
        self_id: Some("2854196310"),
        is_other_bot: &no_other_bot,
    };
    let mut group = c.benchmark_group("onebot_event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("group_message", |b| {
        b.iter(|| black_box(decode_frame(black_box(EVENT), &cx)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
