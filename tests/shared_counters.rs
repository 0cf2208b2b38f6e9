//! The flood and wave counters relay cores share in Redis (issue 17, point 7), against a real
//! redis-server the test starts: two `SharedCounters` on one Redis play two cores. A flood
//! limit and its start hold in total; a wave whose copies alternate between the cores starts
//! once and lasts while copies come; nothing readable is stored and every counter expires; and
//! when Redis fails, the process's own counters judge without holding the relay up.

use std::time::{Duration, Instant};

use qunbridge::config::ModerationConfig;
use qunbridge::core::Moderator;
use qunbridge::moderation::flood::FloodVerdict;
use qunbridge::moderation::shared::{FloodKey, SharedCounters, Sighting, ANSWER_WITHIN};
use qunbridge::moderation::wave::{WaveSpec, WaveVerdict};
use qunbridge::policy::moderation::{FloodConfig, ModerationAction};
use qunbridge::policy::Rate;
use qunbridge_connectors::Envelope;
use qunbridge_tests::Redis;

/// The flood limit, or another rate with the same burst.
fn flood(rate: &str, burst: u32) -> FloodConfig {
    FloodConfig {
        per_sender: Rate::parse(rate).expect("a rate"),
        burst,
        action: ModerationAction::Drop,
    }
}

/// `sender`'s messages in QQ group 735021844 of `qq-main`.
fn member(sender: &str) -> FloodKey<'_> {
    FloodKey {
        account: "qq-main",
        group: "735021844",
        sender,
    }
}

/// Two cores' counters on one Redis, under `prefix`.
fn two_cores(redis: &Redis, prefix: &str) -> [SharedCounters; 2] {
    [
        SharedCounters::open(&redis.url(), prefix).expect("a valid URL"),
        SharedCounters::open(&redis.url(), prefix).expect("a valid URL"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_limit_and_its_start_hold_across_two_cores() {
    let redis = Redis::start().await;
    let cores = two_cores(&redis, "qb-flood:");
    let limit = flood("5/10s", 5);

    // Ten messages of one member, alternating between the cores: five in total get through,
    // and the flood starts once.
    let mut verdicts = Vec::new();
    for n in 0..10 {
        let core = &cores[n % 2];
        verdicts.push(core.flood(&limit, member("10001")).await.expect("redis"));
    }
    assert_eq!(verdicts[..5], [FloodVerdict::Allowed; 5], "{verdicts:?}");
    assert_eq!(verdicts[5], FloodVerdict::Over { first: true });
    assert_eq!(verdicts[6..], [FloodVerdict::Over { first: false }; 4]);

    // Another member, another group, another account: counts of their own.
    for key in [
        member("10002"),
        FloodKey {
            group: "735021845",
            ..member("10001")
        },
        FloodKey {
            account: "qq-other",
            ..member("10001")
        },
    ] {
        assert_eq!(
            cores[1].flood(&limit, key).await.expect("redis"),
            FloodVerdict::Allowed
        );
    }

    // A core that reloaded the same limit keeps the count; a changed limit counts afresh.
    let reloaded = SharedCounters::open(&redis.url(), "qb-flood:").expect("a valid URL");
    assert_eq!(
        reloaded
            .flood(&limit, member("10001"))
            .await
            .expect("redis"),
        FloodVerdict::Over { first: false }
    );
    assert_eq!(
        reloaded
            .flood(&flood("6/10s", 5), member("10001"))
            .await
            .expect("redis"),
        FloodVerdict::Allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_uses_nothing_up_and_the_rate_holds_in_every_rolling_window() {
    let redis = Redis::start().await;
    let cores = two_cores(&redis, "qb-rolling:");
    // Two a second, a burst of two: the window is one second.
    let limit = flood("2/1s", 2);
    let started = Instant::now();
    let mut allowed = Vec::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(3_500) {
        let verdict = cores[n % 2]
            .flood(&limit, member("10001"))
            .await
            .expect("redis");
        if verdict == FloodVerdict::Allowed {
            allowed.push(started.elapsed());
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Never more than two within a second: any three let through span a second at least
    // (by Redis's clock; ours reads each answer a few milliseconds late, or early).
    for three in allowed.windows(3) {
        assert!(
            three[2] - three[0] >= Duration::from_millis(900),
            "three within a second: {allowed:?}"
        );
    }
    // Over the limit uses nothing up: the member is let through again as the rate allows,
    // though they kept posting every 50 ms (2 a second over 3.5 s, give or take one).
    assert!(
        (6..=9).contains(&allowed.len()),
        "{} allowed: {allowed:?}",
        allowed.len()
    );
}

/// Waves with a short window: three groups, senders or repeats make one.
fn waves(window: Duration) -> WaveSpec {
    WaveSpec {
        window,
        ..WaveSpec::default()
    }
}

/// A sighting of `text` in QQ group `group`, said by `sender` at `said_ms`.
fn seen<'a>(text: &'a str, group: &'a str, sender: &'a str, said_ms: Option<u64>) -> Sighting<'a> {
    Sighting {
        fingerprint: text,
        scope: "qq",
        group,
        sender,
        said_ms,
    }
}

/// The fingerprint every wave test spreads.
const AD: &str = "兼职刷单日结300加微信abc123详情example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_split_across_two_cores_starts_once_and_lasts_while_copies_come() {
    let redis = Redis::start().await;
    let cores = two_cores(&redis, "qb-wave:");
    let spec = waves(Duration::from_secs(2));

    // Three groups, alternating between the cores: the third copy starts the wave, once.
    let first = cores[0]
        .sight(&spec, seen(AD, "g1", "u1", None))
        .await
        .expect("redis");
    let second = cores[1]
        .sight(&spec, seen(AD, "g2", "u2", None))
        .await
        .expect("redis");
    assert_eq!((first, second), (WaveVerdict::Clean, WaveVerdict::Clean));
    assert!(
        !cores[1].in_wave(&spec, AD).await.expect("redis"),
        "no wave yet"
    );
    assert_eq!(
        cores[0]
            .sight(&spec, seen(AD, "g3", "u3", None))
            .await
            .expect("redis"),
        WaveVerdict::Wave {
            started: true,
            groups: 3,
            senders: 3,
            repeats: 1
        }
    );
    // The other core, asked whether the text is part of a wave (a suspect that waited
    // asks this), sees the wave; another text is none.
    assert!(cores[1].in_wave(&spec, AD).await.expect("redis"));
    assert!(!cores[1]
        .in_wave(&spec, "另一段完全不同的文字内容")
        .await
        .expect("redis"));
    // Copies keep coming within the window, on either core: the same wave, never started
    // again, also after the first copies left the window.
    for (n, core) in [1, 0, 1].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let group = format!("g{}", 4 + n);
        let verdict = cores[core]
            .sight(&spec, seen(AD, &group, &group, None))
            .await
            .expect("redis");
        assert!(
            matches!(verdict, WaveVerdict::Wave { started: false, .. }),
            "copy {}: {verdict:?}",
            4 + n
        );
    }
    // A whole window without a copy: the wave is over, and one copy is clean.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert!(!cores[0].in_wave(&spec, AD).await.expect("redis"), "over");
    assert_eq!(
        cores[1]
            .sight(&spec, seen(AD, "g1", "u1", None))
            .await
            .expect("redis"),
        WaveVerdict::Clean
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_count_across_cores_but_a_second_bot_accounts_report_does_not() {
    let redis = Redis::start().await;
    let cores = two_cores(&redis, "qb-repeats:");
    let spec = waves(Duration::from_secs(60));
    let said = 1_764_800_000_000;
    // One message reported by three bot accounts, handled by both cores, its platform times
    // straddling a second: one sighting.
    for (core, reported) in [(0, said), (1, said + 400), (0, said + 1_100)] {
        assert_eq!(
            cores[core]
                .sight(&spec, seen(AD, "g1", "u1", Some(reported)))
                .await
                .expect("redis"),
            WaveVerdict::Clean
        );
    }
    // The member saying it again later is a repeat; the third time is a wave.
    assert_eq!(
        cores[1]
            .sight(&spec, seen(AD, "g1", "u1", Some(said + 30_000)))
            .await
            .expect("redis"),
        WaveVerdict::Clean
    );
    assert_eq!(
        cores[0]
            .sight(&spec, seen(AD, "g1", "u1", Some(said + 60_000)))
            .await
            .expect("redis"),
        WaveVerdict::Wave {
            started: true,
            groups: 1,
            senders: 1,
            repeats: 3
        }
    );
    // A second report during the wave is the wave, not a new start.
    assert_eq!(
        cores[1]
            .sight(&spec, seen(AD, "g1", "u1", Some(said + 60_500)))
            .await
            .expect("redis"),
        WaveVerdict::Wave {
            started: false,
            groups: 1,
            senders: 1,
            repeats: 3
        }
    );
    // Text too short to be a wave is never counted, however often.
    for n in 0..5 {
        let group = format!("s{n}");
        assert_eq!(
            cores[n % 2]
                .sight(&spec, seen("好的收到", &group, &group, None))
                .await
                .expect("redis"),
            WaveVerdict::Clean
        );
    }
}

/// Every key under `prefix`, with its type and time to live (ms; -1: none).
async fn keys_under(
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<(String, String, i64)> {
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(connection)
        .await
        .expect("keys");
    let mut keys = Vec::new();
    for name in names {
        let kind: String = redis::cmd("TYPE")
            .arg(&name)
            .query_async(connection)
            .await
            .expect("type");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&name)
            .query_async(connection)
            .await
            .expect("pttl");
        keys.push((name, kind, ttl));
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_hold_only_digests_are_capped_and_expire() {
    let redis = Redis::start().await;
    let cores = two_cores(&redis, "qb-keys:");
    let spec = waves(Duration::from_secs(60));
    let limit = flood("5/10s", 5);
    for n in 0..12 {
        let group = format!("grp-{n}");
        let sender = format!("user-{n}");
        cores[n % 2]
            .sight(&spec, seen(AD, &group, &sender, Some(1_764_800_000_000)))
            .await
            .expect("redis");
        cores[n % 2]
            .flood(&limit, member(&sender))
            .await
            .expect("redis");
    }
    let client = redis::Client::open(redis.url()).expect("url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let keys = keys_under(&mut connection, "qb-keys:").await;
    assert!(keys.len() > 12, "{keys:?}");
    for (name, kind, ttl) in &keys {
        if name == "qb-keys:mod:key" {
            // The hashing key stays: one 32-byte value, the same for every process.
            assert_eq!((kind.as_str(), *ttl), ("string", -1));
            continue;
        }
        assert!(
            *ttl > 0 && *ttl <= 60_000,
            "{name} ({kind}) expires in {ttl} ms"
        );
        // Sets of groups and members are capped at the thresholds (3).
        if kind == "zset" {
            let size: u64 = redis::cmd("ZCARD")
                .arg(name)
                .query_async(&mut connection)
                .await
                .expect("zcard");
            assert!(size <= 3, "{name} holds {size}");
        }
        // Nothing readable: no group id, member id or text in a name or a value (digests
        // are hex, so none can contain these by chance).
        let value: String = match kind.as_str() {
            "hash" => redis::cmd("HGETALL")
                .arg(name)
                .query_async::<Vec<String>>(&mut connection)
                .await
                .expect("hgetall")
                .join(" "),
            "zset" => redis::cmd("ZRANGE")
                .arg(name)
                .arg(0)
                .arg(-1)
                .query_async::<Vec<String>>(&mut connection)
                .await
                .expect("zrange")
                .join(" "),
            "list" => redis::cmd("LRANGE")
                .arg(name)
                .arg(0)
                .arg(-1)
                .query_async::<Vec<String>>(&mut connection)
                .await
                .expect("lrange")
                .join(" "),
            // A wave's marker.
            "string" => redis::cmd("GET")
                .arg(name)
                .query_async::<String>(&mut connection)
                .await
                .expect("get"),
            other => panic!("{name}: unexpected type {other}"),
        };
        for raw in ["grp-", "user-", "qq-main", "兼职", "example"] {
            assert!(!name.contains(raw), "{raw} in the name {name}");
            assert!(!value.contains(raw), "{raw} in {name}: {value}");
        }
    }
}

/// A member's message in QQ group 735021844 of `qq-main`.
fn said(sender: &str, n: u64) -> Envelope {
    serde_json::from_value(serde_json::json!({
        "v": 1, "id": format!("qq-main:735021844:{sender}:{n}"),
        "origin": {"platform": "qq", "account": "qq-main", "group": "735021844",
                   "message_id": n.to_string()},
        "sender": {"id": sender, "name": "小明"}, "ts_ms": 1_764_800_000_000u64 + n,
        "kind": "message", "segments": [{"type": "text", "text": format!("第{n}条消息")}]
    }))
    .expect("an envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_fails_the_process_own_counters_judge_without_holding_the_relay_up() {
    let redis = Redis::start().await;
    let config = ModerationConfig {
        flood: Some(flood("2/min", 2)),
        ..ModerationConfig::default()
    };
    let shared = SharedCounters::open(&redis.url(), "qb-down:").expect("a valid URL");
    let moderator = Moderator::sharing(&config, Some(std::sync::Arc::new(shared)));
    // Another core used up the member's limit: the shared count decides.
    let other_core = SharedCounters::open(&redis.url(), "qb-down:").expect("a valid URL");
    for _ in 0..2 {
        other_core
            .flood(config.flood.as_ref().expect("set"), member("10001"))
            .await
            .expect("redis");
    }
    let over = moderator.judge(&said("10001", 1)).await;
    assert_eq!(
        over.map(|j| (j.rule, j.started)),
        Some(("flood", true)),
        "over the shared limit, though this process saw one message"
    );
    assert_eq!(moderator.judge(&said("10002", 2)).await, None);

    // Redis goes away: this process's own counts judge, at once after the first try.
    drop(redis);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(
        moderator.judge(&said("10002", 3)).await,
        None,
        "the second message of 10002 this process saw"
    );
    assert!(
        started.elapsed() < ANSWER_WITHIN + Duration::from_millis(500),
        "waited {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let third = moderator.judge(&said("10002", 4)).await;
    assert_eq!(
        third.map(|j| (j.rule, j.started)),
        Some(("flood", true)),
        "the process's own limiter: the third of two a minute"
    );
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "backing off, Redis is not asked: {:?}",
        started.elapsed()
    );
}
