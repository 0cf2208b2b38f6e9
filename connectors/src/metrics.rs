//! Names of the metrics connectors emit. They are a contract (dashboards and alert rules
//! query them), so each is written once, here; the relay re-exports them next to its own
//! names and their help texts, because this crate cannot depend on the relay. The drop
//! counter lives here for the same reason: every stage of both crates counts drops alike.

/// Counter: messages taken in from a platform, by `account` and `platform`.
pub const MESSAGES_RECEIVED: &str = "qunbridge_messages_received_total";
/// Counter: messages not relayed, by `reason` (connectors drop what they cannot decode or
/// keep; the relay drops duplicates, echoes, expired and filtered messages).
pub const MESSAGES_DROPPED: &str = "qunbridge_messages_dropped_total";
/// Counter: reconnections to a platform, by `account`.
pub const RECONNECTS: &str = "qunbridge_reconnects_total";
/// Gauge: 1 while an account is connected to its platform, else 0, by `account`.
pub const ACCOUNT_UP: &str = "qunbridge_account_up";
/// Counter: requests or connections refused for bad credentials, by `account`.
pub const AUTH_FAILURES: &str = "qunbridge_auth_failures_total";
/// Counter: platform events or segments of a type qunbridge does not know, by `platform`
/// and `kind`.
pub const UNKNOWN_INPUT: &str = "qunbridge_unknown_input_total";

/// Counter: polls of one group's member list (`member_poll`), by `account` and `outcome`
/// (`ok`, `failed`); labels never carry group or user ids.
pub const MEMBER_POLLS: &str = "qunbridge_member_polls_total";

/// Counter: inbound messages not taken because qunbridge held as much as it can keep (flow
/// control), by `account` and `reason` (`busy`); the platform offers them again.
pub const INGRESS_REJECTED: &str = "qunbridge_ingress_rejected_total";

/// Counts an inbound message refused by flow control (the platform offers it again).
pub fn count_rejected(account: &str, reason: &'static str) {
    metrics::counter!(INGRESS_REJECTED, "account" => account.to_owned(), "reason" => reason)
        .increment(1);
}

/// Counts a message that was not relayed, by `reason` (a fixed word such as `malformed`,
/// `duplicate` or `expired`, so the label set stays small).
pub fn count_drop(reason: &'static str) {
    count_drops(reason, 1);
}

/// Counts `count` messages that were not relayed for one `reason` (a consumer that lagged
/// loses several at once).
pub fn count_drops(reason: &'static str, count: u64) {
    metrics::counter!(MESSAGES_DROPPED, "reason" => reason).increment(count);
    crate::recent::DROPPED.add(reason, count);
}

/// Counter: pictures and files a destination got as a placeholder (or a link) instead of
/// natively, by `platform` (of the destination), `kind` and `reason` (`send_failed`: the
/// implementation failed the message with its pictures and it was sent again without).
pub const MEDIA_FALLBACK: &str = "qunbridge_media_fallback_total";

/// Counter: uploads of cached pictures to a destination account (a OneBot v12 `file_id`, a
/// DingTalk or WeCom media id), by `platform` (of the destination), `kind` and `outcome`
/// (`ok`: uploaded; `reused`: the account's earlier upload of the same picture was still
/// valid; `failed`: the picture could not be read or the platform refused it).
pub const MEDIA_UPLOADS: &str = "qunbridge_media_upload_total";

/// Gauge: bytes of media the on-disk media cache holds now (the sum of its blob sizes).
pub const MEDIA_CACHE_BYTES: &str = "qunbridge_media_cache_bytes";
/// Counter: blobs the media cache removed, by `reason`: `size` (least recently used, to stay
/// under the size cap), `ttl` (unused for longer than the time to live) or `corrupt` (content
/// did not match its name when the cache was opened).
pub const MEDIA_CACHE_EVICTIONS: &str = "qunbridge_media_cache_evictions_total";

/// Counter: media fetches, by `platform` (where the media came from), `kind` (`image`,
/// `sticker`, …) and `outcome` (`ok`, `too_large`, `timeout`, `http_error`, `expired`,
/// `bad_type`, `blocked`, `network`, `sink`).
pub const MEDIA_FETCHES: &str = "qunbridge_media_fetch_total";
/// Histogram: seconds a media fetch took, whatever its outcome, by `platform`.
pub const MEDIA_FETCH_SECONDS: &str = "qunbridge_media_fetch_seconds";

/// Counter: requests for cached media by name, by `server` (`links`: the built-in media
/// server's signed links; `api`: the `api` connector's `/api/v1/media/<sha256>`) and
/// `outcome` (`ok`, `bad_request`, `bad_signature`, `expired`, `not_found`, `read_error`).
pub const MEDIA_SERVED: &str = "qunbridge_media_served_total";
