//! Cost of moderation word lists on one core: compiling a list of 10 000 generated words and
//! 50 regexes, then `is_hit` and `mask` on a ~300-character message of mixed Chinese and
//! ASCII (one message that hits, one that does not), and the spam-wave fingerprint of it.
//! Run with `cargo bench -p qunbridge --bench moderation_lists`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qunbridge::moderation::fingerprint::fingerprint;
use qunbridge::moderation::lists::{CompiledList, ListSpec};
use qunbridge::moderation::normalize::{normalize, Normalize};

/// Characters the generated words are made of: common Han characters and a few letters.
const POOL: &str = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质";

/// A deterministic pseudo-random sequence (no dependency on `rand` in a benchmark).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }
}

/// 10 000 words: `兼职刷单` (the word the hitting message carries) and 9 999 words of 2 to 5
/// characters from [`POOL`], skipping those that happen to occur in [`MESSAGE`].
fn words() -> Vec<String> {
    let pool: Vec<char> = POOL.chars().collect();
    let message = normalize(MESSAGE, Normalize::ALL);
    let mut random = Lcg(17);
    let mut words = vec!["兼职刷单".to_string()];
    while words.len() < 10_000 {
        let len = 2 + random.next() % 4;
        let word: String = (0..len).map(|_| pool[random.next() % pool.len()]).collect();
        if !message.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// 50 regexes in the style of contact-detail rules.
fn patterns() -> Vec<String> {
    (0..50)
        .map(|i| match i % 5 {
            0 => format!(r"qq{i}[:：]\s*\d{{5,11}}"),
            1 => format!(r"(?:微信|vx|v信){i}[:：]?\s*[a-z][a-z0-9_-]{{5,19}}"),
            2 => format!(r"加群{i}\s*\d{{6,10}}"),
            3 => format!(r"日赚\s*\d{{3,}}\s*元{i}"),
            _ => format!(r"tg{i}\s*@[a-z0-9_]{{5,32}}"),
        })
        .collect()
}

/// About 300 characters of a group message: Chinese, ASCII, a link, an emoji.
const MESSAGE: &str = "今天的周会改到下午三点，议程在 https://docs.example.org/weekly/2024-06-20 ，请大家提前看一下。另外新群 QQ群 123456789 和 t.cn/AbCdEf 都别发到微信里。Please review the notes before the meeting, thanks! 😀 上周的问题：数据同步延迟、告警太多、部署脚本在测试环境失败，负责人分别是小王、小李和老张。下周一前把结论写进文档，周三再对一次。Remember: no secrets in the chat, use the vault. 有问题随时在群里说，或者私聊我。";

fn bench(c: &mut Criterion) {
    let spec = ListSpec {
        name: "bench".into(),
        words: words(),
        patterns: patterns(),
        normalize: Normalize::ALL,
        ..ListSpec::default()
    };
    let clean = MESSAGE.to_string();
    let hitting = MESSAGE.replacen("负责人", "兼 职 刷 单，负责人", 1);

    let mut compile = c.benchmark_group("moderation_compile");
    compile.sample_size(10);
    compile.bench_function("10k_words_50_regexes", |b| {
        b.iter(|| black_box(CompiledList::compile(black_box(&spec))))
    });
    compile.finish();

    let Ok(list) = CompiledList::compile(&spec) else {
        panic!("the benchmark list compiles");
    };
    assert!(!list.is_hit(&clean), "the clean message must not hit");
    assert!(list.is_hit(&hitting), "the hitting message must hit");

    let mut group = c.benchmark_group("moderation_lists");
    group.throughput(Throughput::Elements(1));
    for (name, text) in [("clean", &clean), ("hit", &hitting)] {
        group.bench_function(format!("is_hit/{name}"), |b| {
            b.iter(|| black_box(list.is_hit(black_box(text))))
        });
        group.bench_function(format!("mask/{name}"), |b| {
            b.iter(|| black_box(list.mask(black_box(text))))
        });
    }
    group.bench_function("normalize", |b| {
        b.iter(|| black_box(normalize(black_box(&clean), Normalize::ALL)))
    });
    group.bench_function("normalize_keeping_symbols", |b| {
        b.iter(|| {
            black_box(normalize(
                black_box(&clean),
                Normalize::ALL.keeping_symbols(),
            ))
        })
    });
    group.bench_function("fingerprint", |b| {
        b.iter(|| black_box(fingerprint(black_box(&clean))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
