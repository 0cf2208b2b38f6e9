//! The config file as written: every key optional and every value a plain string or list, so
//! that validation can look at all of it and report every mistake at once instead of stopping
//! at the first type error. Unknown keys are collected separately while deserializing.

use std::collections::BTreeMap;

use qunbridge_connectors::protocol::AccountTable;
use serde::Deserialize;

/// Keys of the relay's own tables whose values are secrets (the accounts' secret keys are
/// their protocols': [`AccountTable::SECRET_KEYS`]).
const RELAY_SECRET_KEYS: [&str; 3] = [
    "password", // `[store] redis`: a URL that usually holds a password.
    "redis",
    "link_secret", // `[media]`: signs the media server's links.
];

/// Keys whose values are secrets: they may be given as `<key>_file`, and are never printed.
pub fn secret_keys() -> impl Iterator<Item = &'static str> {
    AccountTable::SECRET_KEYS
        .into_iter()
        .chain(RELAY_SECRET_KEYS)
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// Where persistent state lives.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// What this process runs: `["connectors", "core"]` (the default, `all`), or one of them.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// This process's name among the processes of one deployment (client ids, locks).
    #[serde(default)]
    pub instance: Option<String>,
    /// `[broker]`.
    #[serde(default)]
    pub broker: RawBroker,
    /// `[admin]`.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[store]`: where dedup keys, the send log and the message map live.
    #[serde(default)]
    pub store: RawStore,
    /// `[media]`: how pictures are fetched, cached and carried.
    #[serde(default)]
    pub media: RawMedia,
    /// `[accounts.<id>]`, ordered by id for stable output; their keys are the protocols'
    /// (`qunbridge_connectors::protocol`).
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountTable>,
    /// `[[links]]`, in file order.
    #[serde(default)]
    pub links: Vec<RawLink>,
    /// `[limits."<account>"]`: pacing and length overrides per account.
    #[serde(default)]
    pub limits: BTreeMap<String, RawLimits>,
    /// `[filters.<platform or account>]`: link filtering rules.
    #[serde(default)]
    pub filters: BTreeMap<String, RawFilter>,
    /// `[stats]`: group health.
    #[serde(default)]
    pub stats: RawStats,
    /// `[moderation]`: what is judged before it is relayed.
    #[serde(default)]
    pub moderation: RawModeration,
}

/// `[moderation]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawModeration {
    /// `"<account>:<user id>"` entries never judged (configured bot accounts never are).
    #[serde(default)]
    pub exempt: Vec<String>,
    /// Longest a message stays held for review (`1h`).
    #[serde(default)]
    pub hold_max: Option<String>,
    /// Most messages held at once; beyond it a hold becomes a drop.
    #[serde(default)]
    pub hold_cap: Option<usize>,
    /// `"<account>:<group>"`: the admins' group (in no link) that is told of rule hits with
    /// `notify = true` and of flood and wave starts.
    #[serde(default)]
    pub notify: Option<String>,
    /// Lines a rolling minute the admins' group gets at most (default 10).
    #[serde(default)]
    pub notify_per_minute: Option<u32>,
    /// `[moderation.flood]`: per-sender flood control.
    #[serde(default)]
    pub flood: Option<RawFlood>,
    /// `[moderation.wave]`: spam waves across groups (on when the table is present).
    #[serde(default)]
    pub wave: Option<RawWave>,
    /// `[moderation.lists.<name>]`: word lists that `match = "words"` rules name.
    #[serde(default)]
    pub lists: BTreeMap<String, RawList>,
}

/// `[moderation.lists.<name>]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawList {
    /// Literal words, matched after normalization.
    #[serde(default)]
    pub words: Vec<String>,
    /// Regexes (Rust `regex` syntax).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Files of entries, one a line (`#` comments, `re:` for a regex); a relative path is
    /// looked up next to the config file.
    #[serde(default)]
    pub files: Vec<String>,
    /// Which of `width`, `case`, `symbols` apply before matching (default: all three).
    #[serde(default)]
    pub normalize: Option<Vec<String>>,
    /// Entries that excuse a hit they cover.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[moderation.flood]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawFlood {
    /// Messages a sender may say per window in one group (`5/10s`).
    #[serde(default)]
    pub per_sender: Option<String>,
    /// Messages allowed back to back.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `drop` (default) or `hold`.
    #[serde(default)]
    pub action: Option<String>,
}

/// `[moderation.wave]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawWave {
    /// The sliding window sightings are counted in (`10m`).
    #[serde(default)]
    pub window: Option<String>,
    /// Distinct groups that make a wave (0: this test off).
    #[serde(default)]
    pub groups: Option<u32>,
    /// Distinct senders that make a wave (0: this test off).
    #[serde(default)]
    pub senders: Option<u32>,
    /// Copies from one sender that make a wave (0: this test off).
    #[serde(default)]
    pub repeats: Option<u32>,
    /// Shortest fingerprint, in characters, that can be a wave.
    #[serde(default)]
    pub min_chars: Option<usize>,
    /// `drop` (default) or `hold`.
    #[serde(default)]
    pub action: Option<String>,
    /// How long a newcomer's message with a link, an invite, a contact or a picture waits
    /// before it is relayed (off by default).
    #[serde(default)]
    pub suspect_delay: Option<String>,
}

/// `[stats]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawStats {
    /// Whether group health is counted at all (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The offset days and weeks are counted in (`+08:00`).
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// How long day rows are kept (`400d`).
    #[serde(default)]
    pub retention: Option<String>,
    /// Days of the last 7 a member must have spoken on to be `core`.
    #[serde(default)]
    pub core_days: Option<u32>,
    /// Messages a week needs before the next week's fall counts toward `decline_weeks`.
    #[serde(default)]
    pub decline_min_messages: Option<u64>,
    /// `per_group`, `per_link` or `off`: which `qunbridge_group_*` series are exported.
    #[serde(default)]
    pub metrics: Option<String>,
    /// `"<account>:<group>" = "<alias>"`: the names groups go by in metrics and reports.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Join notice template (`{platform} {name} {link}`).
    #[serde(default)]
    pub join_format: Option<String>,
    /// Leave notice template.
    #[serde(default)]
    pub leave_format: Option<String>,
}

/// `[limits."<account>"]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    /// Rate per destination group (`1/1.5s`, `20/min`, `off`).
    #[serde(default)]
    pub per_group: Option<String>,
    /// Sends per group allowed back to back.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Rate for the whole account.
    #[serde(default)]
    pub per_account: Option<String>,
    /// Sends of the account allowed back to back.
    #[serde(default)]
    pub per_account_burst: Option<u32>,
    /// Age past which a queued message is dropped (`10m`).
    #[serde(default)]
    pub max_delay: Option<String>,
    /// Longest message (bytes or characters, as the platform counts).
    #[serde(default)]
    pub max_length: Option<u64>,
    /// Most parts a long message is split into.
    #[serde(default)]
    pub max_parts: Option<u64>,
    /// Per-group overrides: `[limits."<account>".groups."<group>"]`.
    #[serde(default)]
    pub groups: BTreeMap<String, RawGroupLimits>,
}

/// `[limits."<account>".groups."<group>"]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawGroupLimits {
    /// Rate for this group.
    #[serde(default)]
    pub per_group: Option<String>,
    /// Sends allowed back to back.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A set of filter rules (`[filters.*]`, or `filters` of a link).
#[derive(Debug, Default, Deserialize)]
pub struct RawFilter {
    /// Domains whose links always pass (suffix match).
    #[serde(default)]
    pub allow_domains: Vec<String>,
    /// Domains whose links are stripped (suffix match).
    #[serde(default)]
    pub deny_domains: Vec<String>,
    /// Ordered rules.
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// `drop` or `hold`: what a flooding sender's messages get at this destination,
    /// whatever `[moderation.flood] action` says.
    #[serde(default)]
    pub on_flood: Option<String>,
}

/// One rule: `{ match = "url", action = "defang" }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawRule {
    /// `url`, `qq_group_invite`, `wechat_share_code`, `short_link`, `domain`, `regex` or
    /// `words`.
    #[serde(default, rename = "match")]
    pub matcher: Option<String>,
    /// `allow`, `strip`, `replace`, `defang` or `drop`; for `words`: `mask` or `drop`.
    #[serde(default)]
    pub action: Option<String>,
    /// For `domain`.
    #[serde(default)]
    pub domains: Vec<String>,
    /// For `regex`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `words`: the name of a `[moderation.lists.<name>]` table.
    #[serde(default)]
    pub list: Option<String>,
    /// For `replace`: the text put in place of the match.
    #[serde(default)]
    pub with: Option<String>,
    /// `true`: each message the rule acts on is told to `moderation.notify`.
    #[serde(default)]
    pub notify: Option<bool>,
}

/// `[broker]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawBroker {
    /// External broker URL (`mqtt://` or `mqtts://`); absent means the embedded broker.
    #[serde(default)]
    pub url: Option<String>,
    /// Where the embedded broker listens.
    #[serde(default)]
    pub embedded_listen: Option<String>,
    /// First topic levels of every qunbridge topic.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// External broker user name (overrides the URL's).
    #[serde(default)]
    pub username: Option<String>,
    /// External broker password (overrides the URL's); a secret.
    #[serde(default)]
    pub password: Option<String>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    /// `redis://[:password@]host:port[/db]`: share the state with other qunbridge processes
    /// (scale-out); absent: the embedded store under `state_dir`.
    #[serde(default)]
    pub redis: Option<String>,
    /// Prefix of every Redis key (several deployments on one Redis).
    #[serde(default)]
    pub redis_prefix: Option<String>,
}

/// A size as written: bytes as a number, or a number with a unit (`10 MiB`, `1GiB`, `500KB`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    /// Bytes.
    Bytes(u64),
    /// A number and a unit.
    Text(String),
}

/// `[media]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawMedia {
    /// `native` (re-upload), `link` (signed links of the media server), `placeholder`, or
    /// `passthrough` (the source platform's URL, as before pictures were fetched).
    #[serde(default)]
    pub mode: Option<String>,
    /// Most bytes the on-disk cache under `state_dir/media/` keeps.
    #[serde(default)]
    pub cache_max_bytes: Option<RawSize>,
    /// How long an unused cached file is kept (`24h`).
    #[serde(default)]
    pub cache_ttl: Option<String>,
    /// Longest one fetch may take, connection to last byte (`20s`).
    #[serde(default)]
    pub fetch_timeout: Option<String>,
    /// Largest picture fetched; a larger one is abandoned while streaming.
    #[serde(default)]
    pub max_image_bytes: Option<RawSize>,
    /// How long a destination waits for a picture before sending its placeholder (`20s`).
    #[serde(default)]
    pub wait: Option<String>,
    /// Hosts (names or addresses) that may be fetched although they are loopback, private,
    /// link-local or multicast.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Where the optional media server listens; absent: no media server.
    #[serde(default)]
    pub serve_listen: Option<String>,
    /// The media server's address as platforms' clients reach it (`https://media.example.org`).
    #[serde(default)]
    pub public_base_url: Option<String>,
    /// The key that signs media links; a secret (usually `link_secret_file`).
    #[serde(default)]
    pub link_secret: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    /// Where the admin HTTP endpoint listens.
    #[serde(default)]
    pub listen: Option<String>,
    /// The token the console and `/api/v1/*` ask for (required on a non-loopback address).
    #[serde(default)]
    pub token: Option<String>,
}

/// `[[links]]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLink {
    /// Name for logs and `{link}`; `link-<n>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `account:group` members that send and receive.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `account:group` members that only receive.
    #[serde(default)]
    pub to: Vec<String>,
    /// Sender template.
    #[serde(default)]
    pub format: Option<String>,
    /// Filter rules applied to this link's messages before any others.
    #[serde(default)]
    pub filters: Option<RawFilter>,
    /// Join/leave notices to the link's other groups: `off`, `joins` or `all`.
    #[serde(default)]
    pub notices: Option<String>,
}
