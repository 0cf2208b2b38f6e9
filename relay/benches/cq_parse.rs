//! Parsing OneBot v11 CQ-code strings (`[CQ:type,k=v,…]` mixed with escaped text), what
//! ingress does for every message of an implementation configured to post strings.
//! Run with `cargo bench -p qunbridge --bench cq_parse`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qunbridge_connectors::onebot11::cq::parse;

/// Plain text, no codes (the common case).
const PLAIN: &str =
    "今天的周会改到下午三点，议程见群公告。Please review the notes before the meeting, thanks!";

/// A typical mixed message: a mention, escaped text, a face, an image with a long URL.
const MIXED: &str = "[CQ:at,qq=2854196310] 看这个 &#91;文档&#93; a&amp;b [CQ:face,id=178]\
[CQ:image,file=9F3C1A2B4C5D6E7F.jpg,url=https://gchat.qpic.cn/gchatpic_new/1437420188/735021844-2534335053-9F3C1A2B4C5D6E7F/0?term=2&amp;is_origin=0,subType=0]\
 and a reply [CQ:reply,id=-1730113400] done";

/// A long message: 40 codes and text runs.
fn long() -> String {
    (0..40)
        .map(|n| {
            format!(
                "line {n} with some text &#91;{n}&#93; [CQ:at,qq={}] ",
                10_000 + n
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let long = long();
    let mut group = c.benchmark_group("cq_parse");
    group.throughput(Throughput::Elements(1));
    for (name, input) in [
        ("plain", PLAIN),
        ("mixed", MIXED),
        ("long_40_codes", long.as_str()),
    ] {
        group.bench_function(name, |b| b.iter(|| black_box(parse(black_box(input)))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
