//! Every metric the relay emits, in one place: the names (a contract that dashboards and alert
//! rules query), their `# HELP` texts, and the drop counter every stage uses. The names
//! connectors emit are defined in [`qunbridge_connectors::metrics`] (that crate cannot
//! depend on this one) and re-exported here, so relay code names every metric through this
//! module.

pub use qunbridge_connectors::metrics::{
    count_drop, count_drops, count_rejected, ACCOUNT_UP, AUTH_FAILURES, INGRESS_REJECTED,
    MEDIA_CACHE_BYTES, MEDIA_CACHE_EVICTIONS, MEDIA_FALLBACK, MEDIA_FETCHES, MEDIA_FETCH_SECONDS,
    MEDIA_SERVED, MEDIA_UPLOADS, MEMBER_POLLS, MESSAGES_DROPPED, MESSAGES_RECEIVED, RECONNECTS,
    UNKNOWN_INPUT,
};

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use qunbridge_connectors::Platform;

/// Counter: messages routed to a destination, by `from` and `to` platform.
pub const MESSAGES_RELAYED: &str = "qunbridge_messages_relayed_total";
/// Counter: messages a moderation rule acted on, per destination, by `rule` (`flood`,
/// `wave`, a word list's name), `action` (`drop`, `mask`, `rename`, `hold`) and destination
/// `platform`.
pub const MODERATION_HITS: &str = "qunbridge_moderation_hits_total";
/// Gauge: messages held for review now (one per message and destination).
pub const MODERATION_HELD: &str = "qunbridge_moderation_held";
/// Counter: held messages that left the held table, by `outcome` (`released`, `dropped`,
/// `expired`), and holds refused because `moderation.hold_cap` was reached (`overflow`).
pub const MODERATION_HELD_OUTCOMES: &str = "qunbridge_moderation_held_total";
/// Counter: admin notification lines (`moderation.notify`), by `outcome`: `sent` (published
/// to the admins' group, summaries included), `suppressed` (over `notify_per_minute`, told
/// only in a summary), `dropped` (lost: the notifier's queue was full or the broker did not
/// take the line).
pub const MODERATION_NOTIFICATIONS: &str = "qunbridge_moderation_notifications_total";
/// Counter: spam waves detected (a text seen in too many groups, from too many senders or
/// repeated too often within `[moderation.wave] window`), each once when it starts.
pub const MODERATION_WAVES: &str = "qunbridge_moderation_waves_total";
/// Counter: member messages judged with the process's own flood and wave counters because
/// the shared counters in Redis failed, or were backing off after a failure.
pub const MODERATION_SHARED_FALLBACKS: &str = "qunbridge_moderation_shared_fallbacks_total";
/// Counter: links in messages a filter rule acted on, by `platform`, `rule` and `action`.
pub const LINKS_FILTERED: &str = "qunbridge_links_filtered_total";
/// Counter: queued messages merged into one send, by `account`.
pub const MESSAGES_COALESCED: &str = "qunbridge_messages_coalesced_total";
/// Histogram: seconds from ingress to the destination platform accepting the message.
pub const RELAY_LATENCY: &str = "qunbridge_relay_latency_seconds";
/// Gauge: messages waiting in an account's destination queues, by `account`.
pub const QUEUE_DEPTH: &str = "qunbridge_queue_depth";
/// Counter: sends the platform throttled, by `account`.
pub const RATE_LIMITED: &str = "qunbridge_rate_limited_total";
/// Gauge: 1 while the relay core is connected to the MQTT broker, else 0.
pub const BROKER_CONNECTED: &str = "qunbridge_broker_connected";
/// Counter: writes to the persistent state store that failed.
pub const STORE_ERRORS: &str = "qunbridge_store_errors_total";
/// Counter: messages the embedded broker skipped past for a reader that fell further behind
/// than its log holds (acknowledged to their publisher, never delivered).
pub const BROKER_MESSAGES_LOST: &str = "qunbridge_broker_messages_lost_total";
/// Counter: transactions the embedded state store committed (each one fsync, carrying every
/// write that was queued when it began).
pub const STORE_COMMITS: &str = "qunbridge_store_commits_total";
/// Histogram: seconds one state-store commit took, fsync included.
pub const STORE_COMMIT_SECONDS: &str = "qunbridge_store_commit_seconds";
/// Group health: messages said in a linked group, by its alias.
pub const GROUP_MESSAGES: &str = "qunbridge_group_messages_total";
/// Group health: members who joined a linked group, by alias and how.
pub const GROUP_JOINED: &str = "qunbridge_group_members_joined_total";
/// Group health: members who left a linked group, by alias and how.
pub const GROUP_LEFT: &str = "qunbridge_group_members_left_total";
/// Times a bot account was removed from a linked group (or the group disbanded), by account.
pub const GROUP_BOT_REMOVED: &str = "qunbridge_group_bot_removed_total";
/// Group health: what is known of each linked group (value 1), by alias, link, platform,
/// account and coverage.
pub const GROUP_INFO: &str = "qunbridge_group_info";
/// Group health: distinct members who spoke over a window (`1d`, `7d`, `28d`), by alias.
pub const GROUP_ACTIVE_SENDERS: &str = "qunbridge_group_active_senders";
/// Group health: the last member count the platform told, by alias.
pub const GROUP_MEMBER_COUNT: &str = "qunbridge_group_member_count";
/// Group health: members by tier (core, regular, lurking, silent), by alias.
pub const GROUP_MEMBERS_BY_TIER: &str = "qunbridge_group_members_by_tier";
/// Group health: complete weeks in a row each with fewer messages than the week before.
pub const GROUP_DECLINE_WEEKS: &str = "qunbridge_group_decline_weeks";
/// Counter: configuration reloads, by `outcome` (`ok` or `failed`).
pub const CONFIG_RELOADS: &str = "qunbridge_config_reloads_total";

/// Registers the help text of every metric, so the scrape carries `# HELP` lines
/// (`promtool check metrics` asks for them). Call once the recorder is installed.
pub fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        MEMBER_POLLS,
        "Polls of a group's member list (`member_poll`), by account and outcome."
    );
    describe_counter!(
        GROUP_MESSAGES,
        "Messages said in a linked group (not by bots), by the group's alias."
    );
    describe_counter!(
        GROUP_JOINED,
        "Members who joined a linked group, by alias and how."
    );
    describe_counter!(
        GROUP_LEFT,
        "Members who left a linked group, by alias and how."
    );
    describe_counter!(
        GROUP_BOT_REMOVED,
        "Times a bot account was removed from a linked group or the group was disbanded."
    );
    describe_gauge!(
        GROUP_INFO,
        "Each linked group (1), by alias, link, platform, account and coverage."
    );
    describe_gauge!(
        GROUP_ACTIVE_SENDERS,
        "Distinct members who spoke in a linked group over a window (1d, 7d, 28d)."
    );
    describe_gauge!(
        GROUP_MEMBER_COUNT,
        "The last member count the platform told for a linked group."
    );
    describe_gauge!(
        GROUP_MEMBERS_BY_TIER,
        "Members of a linked group by tier: core, regular, lurking, silent."
    );
    describe_gauge!(
        GROUP_DECLINE_WEEKS,
        "Complete weeks in a row, each with fewer messages than the week before."
    );
    describe_counter!(
        MESSAGES_RECEIVED,
        "Messages taken in from a platform, by account and platform."
    );
    describe_counter!(
        MESSAGES_RELAYED,
        "Messages routed to a destination, by origin and destination platform."
    );
    describe_counter!(MESSAGES_DROPPED, "Messages not relayed, by reason.");
    describe_gauge!(
        MODERATION_HELD,
        "Messages held for review now, one per message and destination."
    );
    describe_counter!(
        MODERATION_HELD_OUTCOMES,
        "Held messages that left the held table (released, dropped, expired) and holds refused at the cap (overflow)."
    );
    describe_counter!(
        MODERATION_HITS,
        "Messages a moderation rule acted on, per destination, by rule, action and destination platform."
    );
    describe_counter!(
        MODERATION_NOTIFICATIONS,
        "Admin notification lines to moderation.notify, by outcome: sent (summaries included), suppressed (over notify_per_minute, told in a summary), dropped (queue full or not published)."
    );
    describe_counter!(
        MODERATION_WAVES,
        "Spam waves detected across groups, each counted once when it starts."
    );
    describe_counter!(
        MODERATION_SHARED_FALLBACKS,
        "Member messages judged with this process's own flood and wave counters because the shared counters in Redis failed or were backing off."
    );
    describe_counter!(
        LINKS_FILTERED,
        "Links in messages that a filter rule acted on, by platform, rule and action."
    );
    describe_counter!(
        MESSAGES_COALESCED,
        "Queued messages merged into one send, by account."
    );
    describe_histogram!(
        RELAY_LATENCY,
        Unit::Seconds,
        "Time from ingress to the destination platform accepting the message."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Messages waiting in an account's destination queues."
    );
    describe_counter!(RATE_LIMITED, "Sends the platform throttled, by account.");
    describe_gauge!(
        ACCOUNT_UP,
        "1 while the account is connected to its platform, else 0."
    );
    describe_counter!(RECONNECTS, "Reconnections to the platform, by account.");
    describe_gauge!(
        BROKER_CONNECTED,
        "1 while the relay core is connected to the MQTT broker, else 0."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Requests or connections refused for bad credentials, by account."
    );
    describe_counter!(
        UNKNOWN_INPUT,
        "Platform events or message segments of a type qunbridge does not know, by platform and kind."
    );
    describe_counter!(
        STORE_ERRORS,
        "Writes to the persistent state store that failed (the relay goes on; redelivery may repeat a message)."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads, by outcome: ok (applied) or failed (the running configuration is kept)."
    );
    describe_counter!(
        STORE_COMMITS,
        "Transactions the embedded state store committed; writes queued together share one."
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Seconds one embedded state-store commit took, fsync included."
    );
    describe_counter!(
        INGRESS_REJECTED,
        "Inbound messages refused by flow control (qunbridge held as much as it can keep), by account and reason; the platform offers them again."
    );
    describe_counter!(
        MEDIA_FETCHES,
        "Picture fetches and URL checks by destination platform, kind and outcome (blocked: an internal host's URL never handed on)."
    );
    describe_counter!(
        MEDIA_FALLBACK,
        "Pictures a destination got as a placeholder instead of natively, by destination platform, kind and reason."
    );
    describe_counter!(
        MEDIA_UPLOADS,
        "Uploads of cached pictures to a destination account, by destination platform, kind and outcome (ok: uploaded; reused: the account's earlier upload was still valid; failed)."
    );
    describe_gauge!(
        MEDIA_CACHE_BYTES,
        "Bytes of media the on-disk media cache holds now."
    );
    describe_counter!(
        MEDIA_CACHE_EVICTIONS,
        "Blobs the media cache removed, by reason (size: least recently used, to stay under cache_max_bytes; ttl: unused longer than cache_ttl; corrupt)."
    );
    describe_histogram!(
        MEDIA_FETCH_SECONDS,
        Unit::Seconds,
        "Seconds a media fetch took, whatever its outcome, by source platform."
    );
    describe_counter!(
        MEDIA_SERVED,
        "Requests for cached media by name, by server (links: the media server's signed links; api: /api/v1/media) and outcome (ok, bad_request, bad_signature, expired, not_found, read_error)."
    );
    describe_counter!(
        BROKER_MESSAGES_LOST,
        "Messages the embedded broker skipped for a reader that fell behind its log (lost)."
    );
}

/// Counts a message routed from `from` to `to` (`qunbridge_messages_relayed_total`). The
/// handle of each pair of platforms is looked up once, the first time the pair relays (the
/// exporter is installed before any account starts), and kept: building a series' key and
/// looking it up in the registry cost an allocation and a hash per message.
pub fn count_relayed(from: Platform, to: Platform) {
    const PLATFORMS: usize = Platform::ALL.len();
    static SERIES: [[OnceLock<Counter>; PLATFORMS]; PLATFORMS] =
        [const { [const { OnceLock::new() }; PLATFORMS] }; PLATFORMS];
    SERIES[from as usize][to as usize]
        .get_or_init(
            || metrics::counter!(MESSAGES_RELAYED, "from" => from.as_str(), "to" => to.as_str()),
        )
        .increment(1);
}

/// Records a relayed message's latency in seconds (`qunbridge_relay_latency_seconds`),
/// through a handle looked up once, as [`count_relayed`] does.
pub fn record_relay_latency(seconds: f64) {
    static SERIES: OnceLock<Histogram> = OnceLock::new();
    SERIES
        .get_or_init(|| metrics::histogram!(RELAY_LATENCY))
        .record(seconds);
}
