//! The daemon's store: one redb file, `state.redb` under `state_dir`, crash-safe (every
//! write is committed with fsync before the caller hears back).
//!
//! Writes go to one writer thread that commits whatever has queued up as one transaction
//! (group commit): a burst of messages costs one fsync, not one each. Reads use their own
//! read transactions on the caller's thread (redb readers never wait for the writer).
//!
//! Sizes are bounded: every key, message-map origin and api feed key has an expiry, kept in
//! an expiry index that the writer sweeps (at most once a minute, and only after writes, so
//! an idle daemon does no work); each table also has a most-entries cap, enforced by
//! evicting the entries that expire first. The api feeds keep a fixed number of events per
//! group.
//!
//! Short-lived keys (the echo guard's, two minutes) are not put in the key table: they are
//! journaled in the expiry rows and looked up in memory ([`ShortLived`]), which is rebuilt
//! from those rows when the store opens.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use qunbridge_connectors::api::{Appended, FeedLog, FeedLogError};
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::held::HeldEntry;
use super::outbox_index::OutboxIndex;
use super::short_lived::{self, ShortLived};
use super::stats::{self, DayCounts, DayRow, StatsDelta};
use super::table_letters::TableLetters;
use super::{
    CopyRecord, DaySenders, OriginEntry, OutboxEntry, OutboxPut, RelayStore, StoreError,
    WriteBatch, DEDUP_TTL, MAP_TTL,
};

/// The store's file name under `state_dir`.
pub const FILE_NAME: &str = "state.redb";
/// Most keys (dedup, send log, echo) held.
pub const MAX_KEYS: u64 = 2_000_000;
/// Most message-map origins held.
pub const MAX_ORIGINS: u64 = 500_000;
/// Most api feed idempotency keys held.
const MAX_FEED_KEYS: u64 = 1_000_000;
/// redb's page cache: small, the working set is the recent keys.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Most write jobs committed in one transaction.
const BATCH: usize = 1024;
/// Write jobs queued at most before writers wait (backpressure, bounded memory).
const QUEUE: usize = 8192;
/// Sweeps run at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long opening waits for a store another handle is still closing.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// Entries removed per sweep at most, so a sweep never holds up writes for long.
const SWEEP_MAX: usize = 20_000;

/// Key → expiry (ms since the epoch): dedup, send log and echo keys.
const KEYS: TableDefinition<&str, u64> = TableDefinition::new("keys");
/// Origin key → JSON [`OriginEntry`].
const ORIGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("origins");
/// Copy key → origin key.
const COPIES: TableDefinition<&str, &str> = TableDefinition::new("copies");
/// (expiry ms, table letter + key) → (): the expiry index of stores written before it was
/// batched ([`EXPIRING`]); only swept, so that what it names still goes in time.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
/// (expiry ms, serial) → the names (table letter + key, [`pack`]ed) that expire then: the
/// expiry index, one row per expiry time of a commit rather than one per key, so a commit of
/// many messages adds a few rows. What to sweep, oldest first.
const EXPIRING: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("expiring");
/// The meta row holding the last [`EXPIRING`] serial.
const EXPIRING_SERIAL: &str = "expiring_serial";
/// (account␟group, seq) → event JSON: the api feeds.
const FEED: TableDefinition<(&str, u64), &str> = TableDefinition::new("feed");
/// Feed idempotency key → (seq, expiry ms).
const FEED_KEYS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("feed_keys");
/// Named counters: `epoch`, `seq␟account␟group` (last feed seq).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Outbox: (account, seq) → entry ([`encode_entry`]), in the order egress put them.
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// The outbox index of stores written before it was held in memory ([`OutboxIndex`]):
/// deleted when such a store opens.
const OUTBOX_INDEX: TableDefinition<&str, u64> = TableDefinition::new("outbox_index");
/// The meta row holding the last outbox sequence number of stores written before
/// [`OutboxIndex`]; read when such a store opens, so that numbers go on from there.
const OUTBOX_SEQ: &str = "outbox_seq";
/// Group health: `day|account|group` → that day's counts (JSON of [`DayCounts`]).
const STATS_ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats_rows");
/// Group health: `day|account|group|digest` → nothing; the digests of members who spoke.
const STATS_SENDERS: TableDefinition<&str, ()> = TableDefinition::new("stats_senders");
/// Held id → JSON [`HeldEntry`]: messages held for review.
const HELD: TableDefinition<&str, &[u8]> = TableDefinition::new("held");
/// How long the writer sleeps at most before a commit while batches are forming (the previous
/// commit carried at least [`GATHER_FROM`] jobs, and jobs come at [`GATHER_RATE`] or faster),
/// so that one commit carries what a sustained stream brings in that time; never at low and
/// moderate rates, so their latency is that of one commit. It sleeps rather than waits on the
/// queue: jobs sent meanwhile do not wake it, only the one that brings the queue to
/// [`WAKE_AT`], and it wakes every [`GATHER_IDLE`] to end the sleep when that brought no job. A commit's cost hardly depends on how many jobs it
/// carries (its pages are shared by them), so this is what makes a message cheap at
/// saturation: OneBot → OneBot costs 106–124 µs per message at 0.011–0.015 commits each,
/// against 121–152 µs at 0.028–0.048 with a fixed 4 ms sleep (docs/BENCHMARKS.md, issue 14
/// session 18). The cost: under a sustained stream a write waits up to this much longer.
const GATHER_WAIT: Duration = Duration::from_millis(12);
/// A sleep before a commit ([`GATHER_WAIT`]) ends after this long without a new job: the
/// writers are then waiting for the commit (a pipeline bounded by a window of deliveries
/// acknowledged after it, as the broker's 100 are), and sleeping on would only hold them up.
/// A fixed 12 ms sleep without it halved `api` → `api` throughput; 6 ms cost it a fifth.
const GATHER_IDLE: Duration = Duration::from_micros(1500);
/// Jobs in one commit from which the writer may take the input for a sustained stream and
/// sleep [`GATHER_WAIT`] before the next: below it, jobs that arrive during a commit already
/// share the next one, and waiting would only add latency.
const GATHER_FROM: usize = 8;
/// Jobs per second from which the input is a sustained stream worth a sleep: the rate at which
/// commits took their jobs, averaged over about 50 ms ([`JobRate`]). Counting alone would not
/// do: a 12 ms sleep gathers 36 jobs at 1,000 messages/s, so one burst's large commit kept
/// every later one sleeping (soak p99 2.4 → 14.6 ms). The rate of one commit would not either:
/// a stall of the async thread a few milliseconds long delivers its backlog into one commit,
/// fast, and that started a sleep about once a second on a shared host (p99 11.7 ms). Relaying
/// a message makes about two jobs (the outbox put or feed append, and the record; the core's
/// keys are batched), so 1,000 messages/s bring about 2,200 jobs/s, and this is about 2,000
/// messages/s; saturation on the 2-core development machine brings 10,000–14,000 (OneBot) to
/// 30,000 (`api`). A higher bar (8,000) let OneBot's stream, bursty through mosquitto, fall
/// out of gathering (0.17 commits per message against 0.03).
const GATHER_RATE: f64 = 4_000.0;
/// Jobs queued at which a writer sleeping before its commit ([`GATHER_WAIT`]) is woken: a
/// pipeline whose window of deliveries waits for this commit has then sent what it can, and
/// sleeping on would only hold it up.
const WAKE_AT: usize = 256;

/// Expiry-index prefixes naming the table an entry belongs to.
const IN_KEYS: char = 'k';
/// See [`IN_KEYS`].
const IN_ORIGINS: char = 'o';
/// See [`IN_KEYS`].
const IN_FEED_KEYS: char = 'f';
/// See [`IN_KEYS`]: a short-lived key, held in memory ([`ShortLived`]) rather than in a table.
const IN_MEMORY: char = 'h';

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A redb error as a store error.
fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Work for the writer thread.
enum Job {
    /// A batch of keys and message-map copies.
    Write {
        /// What to write.
        batch: WriteBatch,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// An outbox put.
    OutboxPut {
        /// The account whose outbox it is.
        account: String,
        /// The entry.
        entry: OutboxEntry,
        /// Answered after the commit: true when added.
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// An api feed event.
    Append {
        /// `account␟group`.
        feed: String,
        /// Idempotency key.
        key: String,
        /// The event.
        json: String,
        /// Events kept per group.
        keep: usize,
        /// Answered after the commit.
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
}

/// A job's outcome, held until the commit decides it.
enum Done {
    /// A write's reply.
    Write(oneshot::Sender<Result<(), StoreError>>),
    /// An append's reply and result.
    Append(oneshot::Sender<Result<Appended, StoreError>>, Appended),
    /// An outbox put's reply and whether it added the entry.
    OutboxPut(oneshot::Sender<Result<bool, StoreError>>, bool),
}

/// The store. Cheap to share behind an `Arc`; the writer thread ends when the last handle
/// is dropped.
pub struct PersistentStore {
    /// The database (readers use it directly).
    db: Arc<Database>,
    /// To the writer thread; taken on drop so the thread ends.
    jobs: Option<std_mpsc::SyncSender<Job>>,
    /// The writer thread, joined on drop so the file is closed when the store is gone.
    writer: Option<std::thread::JoinHandle<()>>,
    /// Set once at creation, kept for the store's life: the api feeds' event-id epoch.
    epoch: u64,
    /// The file, for messages.
    path: PathBuf,
    /// Short-lived keys, shared with the writer thread, which adds a commit's once it is
    /// durable.
    short_lived: Arc<Mutex<ShortLived>>,
    /// Jobs queued and not yet taken by the writer: the submit that brings it to [`WAKE_AT`]
    /// wakes a writer sleeping before its commit.
    queued: Arc<AtomicUsize>,
    /// The namespaces the key table may hold, shared with the writer thread, which notes
    /// the keys it puts there: a lookup of a short-lived key that is not in memory reads the
    /// table only when keys of its kind were put there.
    table_letters: Arc<TableLetters>,
}

impl PersistentStore {
    /// Opens (or creates) `state.redb` in `dir`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process has it open, [`StoreError::Unreadable`]
    /// when it is corrupt or not a store.
    pub fn open(dir: &Path) -> Result<PersistentStore, StoreError> {
        let path = dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let unreadable = |reason: String| StoreError::Unreadable {
            path: shown.clone(),
            reason,
        };
        // A store that is still being closed (a restart in the same process, or a previous
        // process still exiting under a supervisor) gets a moment to let go.
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
            {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::Locked {
                        path: shown.clone(),
                    })
                }
                Err(other) => return Err(unreadable(other.to_string())),
            }
        };
        let db = Arc::new(db);
        let epoch = init(&db).map_err(|error| unreadable(error.to_string()))?;
        let mut held = ShortLived::new(short_lived::MAX_ENTRIES);
        let short_lived_keys = rebuild_short_lived(&db, &mut held, now_ms())
            .map_err(|error| unreadable(error.to_string()))?;
        let short_lived = Arc::new(Mutex::new(held));
        let outbox_index = load_outbox_index(&db).map_err(|error| unreadable(error.to_string()))?;
        let table_letters =
            Arc::new(load_table_letters(&db).map_err(|error| unreadable(error.to_string()))?);
        let writer_letters = table_letters.clone();
        let (jobs, rx) = std_mpsc::sync_channel(QUEUE);
        let writer_db = db.clone();
        let writer_keys = short_lived.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = queued.clone();
        let writer = std::thread::Builder::new()
            .name("qunbridge-store".into())
            .spawn(move || {
                let shared = WriterShared {
                    queued: &writer_queued,
                    short_lived: &writer_keys,
                    table_letters: &writer_letters,
                };
                write_loop(&writer_db, &rx, &shared, outbox_index)
            })
            .map_err(backend)?;
        info!(message = "State store opened.", path = %shown, short_lived_keys);
        Ok(PersistentStore {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            epoch,
            path,
            short_lived,
            queued,
            table_letters,
        })
    }

    /// Moves `state.redb` in `dir` aside (to `state.redb.<unix seconds>.bak`) so the next
    /// start begins with an empty store. Returns where it went, or `None` when there was none.
    ///
    /// # Errors
    /// The I/O error of the rename.
    pub fn reset(dir: &Path) -> std::io::Result<Option<PathBuf>> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(None);
        }
        let seconds = now_ms() / 1000;
        let mut aside = dir.join(format!("{FILE_NAME}.{seconds}.bak"));
        let mut n = 1;
        while aside.exists() {
            aside = dir.join(format!("{FILE_NAME}.{seconds}-{n}.bak"));
            n += 1;
        }
        std::fs::rename(&path, &aside)?;
        Ok(Some(aside))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a job for the writer; fails when the writer has stopped.
    fn submit(&self, job: Job) -> Result<(), StoreError> {
        let Some(jobs) = &self.jobs else {
            return Err(StoreError::Stopped);
        };
        // Counted before it is sent, so the writer never takes more than was counted.
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        jobs.send(job).map_err(|_| StoreError::Stopped)?;
        if queued == WAKE_AT {
            if let Some(writer) = &self.writer {
                writer.thread().unpark();
            }
        }
        Ok(())
    }

    /// Entries per table, for tests and `qunbridge status`-style checks.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the store cannot be read.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let len = |result: Result<u64, redb::StorageError>| result.map_err(backend);
        Ok(StoreCounts {
            keys: len(txn.open_table(KEYS).map_err(backend)?.len())?,
            origins: len(txn.open_table(ORIGINS).map_err(backend)?.len())?,
            copies: len(txn.open_table(COPIES).map_err(backend)?.len())?,
            feed_events: len(txn.open_table(FEED).map_err(backend)?.len())?,
            outbox: len(txn.open_table(OUTBOX).map_err(backend)?.len())?,
            short_lived_keys: lock(&self.short_lived).len() as u64,
        })
    }
}

/// The short-lived keys, also when a thread panicked holding them (a plain map: it is whole).
fn lock(keys: &Mutex<ShortLived>) -> MutexGuard<'_, ShortLived> {
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Puts the short-lived keys still alive at `now` in `keys`, from the expiry rows that name
/// them (they all expire within [`short_lived::LONGEST`]). Returns how many.
fn rebuild_short_lived(
    db: &Database,
    keys: &mut ShortLived,
    now: u64,
) -> Result<usize, redb::Error> {
    let txn = db.begin_read()?;
    let rows = txn.open_table(EXPIRING)?;
    let last = expiry(now, short_lived::LONGEST);
    let mut found = 0;
    for row in rows.range((now.saturating_add(1), 0)..=(last, u64::MAX))? {
        let (at, names) = row?;
        let until = at.value().0;
        for name in unpack(names.value()) {
            if let Some(key) = name.strip_prefix(IN_MEMORY) {
                keys.insert(keys.hash(key), until);
                found += 1;
            }
        }
    }
    Ok(found)
}

impl Drop for PersistentStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed what was queued.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// How many entries the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    /// Dedup, send-log and echo keys.
    pub keys: u64,
    /// Message-map origins.
    pub origins: u64,
    /// Message-map copies.
    pub copies: u64,
    /// api feed events.
    pub feed_events: u64,
    /// Messages waiting in outboxes.
    pub outbox: u64,
    /// Short-lived keys held in memory (some may have expired).
    pub short_lived_keys: u64,
}

/// Creates the tables and the epoch on first use; returns the epoch.
fn init(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let epoch = {
        txn.open_table(KEYS)?;
        txn.open_table(ORIGINS)?;
        txn.open_table(COPIES)?;
        txn.open_table(EXPIRY)?;
        txn.open_table(EXPIRING)?;
        txn.open_table(FEED)?;
        txn.open_table(FEED_KEYS)?;
        txn.open_table(OUTBOX)?;
        // Held in memory now ([`OutboxIndex`]).
        txn.delete_table(OUTBOX_INDEX)?;
        txn.open_table(STATS_ROWS)?;
        txn.open_table(STATS_SENDERS)?;
        txn.open_table(HELD)?;
        let mut meta = txn.open_table(META)?;
        let existing = meta.get("epoch")?.map(|v| v.value());
        match existing {
            Some(epoch) => epoch,
            None => {
                let epoch = now_ms();
                meta.insert("epoch", epoch)?;
                epoch
            }
        }
    };
    txn.commit()?;
    Ok(epoch)
}

/// The outbox index of what the outbox table holds; its numbers go on after the last one
/// given out (also by a store written before the index was held in memory).
fn load_outbox_index(db: &Database) -> Result<OutboxIndex, redb::Error> {
    let txn = db.begin_read()?;
    let last_seq = txn
        .open_table(META)?
        .get(OUTBOX_SEQ)?
        .map_or(0, |v| v.value());
    let mut index = OutboxIndex::starting_after(last_seq);
    for row in txn.open_table(OUTBOX)?.iter()? {
        let (at, value) = row?;
        let (account, seq) = at.value();
        // An unreadable entry names no message: it is left to the requeue, which skips it.
        if let Some(entry) = OutboxEntry::decode(value.value()) {
            index.load(outbox_name(account, &entry.key), seq);
        }
    }
    Ok(index)
}

/// The namespaces of the keys the key table holds.
fn load_table_letters(db: &Database) -> Result<TableLetters, redb::Error> {
    let txn = db.begin_read()?;
    let keys = txn.open_table(KEYS)?;
    TableLetters::of_table(&keys)
}

/// What the writer thread shares with the store's readers.
struct WriterShared<'a> {
    /// Jobs queued and not yet taken.
    queued: &'a AtomicUsize,
    /// Short-lived keys, to which a commit adds its own once it is durable.
    short_lived: &'a Mutex<ShortLived>,
    /// The namespaces the key table may hold, noted before each commit that writes there.
    table_letters: &'a TableLetters,
}

/// The writer thread: takes what has queued, applies it in one transaction, commits, answers.
fn write_loop(
    db: &Database,
    jobs: &std_mpsc::Receiver<Job>,
    shared: &WriterShared<'_>,
    mut outbox_index: OutboxIndex,
) {
    let WriterShared {
        queued,
        short_lived,
        table_letters,
    } = *shared;
    let hasher = lock(short_lived).hasher().clone();
    let mut last_sweep = Instant::now();
    let mut written_since_sweep = false;
    let mut forming = false;
    let mut last_taken = Instant::now();
    let mut rate = JobRate::default();
    loop {
        // Idle: block until work comes; a due sweep waits for the next write.
        let Ok(first) = jobs.recv() else {
            debug!(message = "State store writer stopped.");
            return;
        };
        let mut batch = vec![first];
        // Group commit: while batches are forming (a sustained stream, [`GATHER_RATE`]), let
        // more queue up, so that one commit carries them; then take what is queued.
        if forming {
            gather(queued);
        }
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let taken = Instant::now();
        let span = taken.duration_since(last_taken);
        last_taken = taken;
        forming = batch.len() >= GATHER_FROM && rate.update(batch.len(), span) >= GATHER_RATE;
        let sweep = written_since_sweep && last_sweep.elapsed() >= SWEEP_EVERY;
        let started = Instant::now();
        let fleeting = Fleeting {
            set: short_lived,
            hasher: &hasher,
            room: lock(short_lived).room(now_ms()),
            held: Vec::new(),
            table_letters,
        };
        let outcome = commit(db, batch, sweep, fleeting, &mut outbox_index);
        metrics::counter!(crate::metrics::STORE_COMMITS).increment(1);
        metrics::histogram!(crate::metrics::STORE_COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                written_since_sweep = true;
                if sweep {
                    last_sweep = Instant::now();
                    written_since_sweep = false;
                }
            }
            Err(error) => {
                metrics::counter!(crate::metrics::STORE_ERRORS).increment(1);
                warn!(message = "State store commit failed.", %error);
            }
        }
    }
}

/// How long the job rate the writer goes by takes to follow a change ([`JobRate`]).
const RATE_TAU: Duration = Duration::from_millis(50);

/// The rate at which jobs come, averaged over about [`RATE_TAU`] (exponentially weighted by
/// time): a commit's batch after a stall of the async thread a few milliseconds long (common
/// on a shared host) comes fast, but only a sustained stream lifts the average.
#[derive(Default)]
struct JobRate {
    /// Jobs per second.
    per_second: f64,
}

impl JobRate {
    /// Takes `jobs` that came over `span`; returns the average.
    fn update(&mut self, jobs: usize, span: Duration) -> f64 {
        let span = span.as_secs_f64().max(1e-6);
        let now = jobs as f64 / span;
        let weight = 1.0 - (-span / RATE_TAU.as_secs_f64()).exp();
        self.per_second += weight * (now - self.per_second);
        self.per_second
    }
}

/// Sleeps before a commit while batches are forming, so that the commit carries what a
/// sustained stream brings meanwhile: until [`GATHER_WAIT`] has passed, [`WAKE_AT`] jobs are
/// queued, or a whole [`GATHER_IDLE`] brought no job (what writes is waiting for this
/// commit). Jobs sent meanwhile do not wake it, except the one that brings the queue to
/// [`WAKE_AT`].
fn gather(queued: &AtomicUsize) {
    let until = Instant::now() + GATHER_WAIT;
    let mut seen = queued.load(Ordering::Acquire);
    let mut changed = Instant::now();
    while seen < WAKE_AT {
        let now = Instant::now();
        let Some(left) = until.checked_duration_since(now) else {
            return;
        };
        let idle_left = (changed + GATHER_IDLE).saturating_duration_since(now);
        if idle_left.is_zero() {
            return;
        }
        // A wake-up may come early (a spurious one, or an unpark left from before): only a
        // whole idle interval ends the sleep.
        std::thread::park_timeout(left.min(idle_left));
        let now_queued = queued.load(Ordering::Acquire);
        if now_queued != seen {
            seen = now_queued;
            changed = Instant::now();
        }
    }
}

/// The short-lived keys of one commit: journaled in it, held in memory once it is durable.
struct Fleeting<'a> {
    /// The set in memory, for lookups during the commit.
    set: &'a Mutex<ShortLived>,
    /// The hasher of the set in memory.
    hasher: &'a RandomState,
    /// How many more the set in memory takes; the rest go to the key table.
    room: usize,
    /// (hash, expiry) of the commit's short-lived keys.
    held: Vec<(u64, u64)>,
    /// The namespaces of the key table, noted for each key this commit puts there.
    table_letters: &'a TableLetters,
}

impl Fleeting<'_> {
    /// True when `key` (with `ttl`) is held in memory rather than in the key table: it is
    /// short-lived and there is room.
    fn take(&mut self, key: &str, ttl: Duration, until: u64) -> bool {
        if ttl > short_lived::LONGEST || self.held.len() >= self.room {
            return false;
        }
        self.held.push((self.hasher.hash_one(key), until));
        true
    }

    /// True when `key` is a short-lived key alive at `now`: in the set, or written earlier
    /// in this commit.
    fn holds(&self, key: &str, now: u64) -> bool {
        let hash = self.hasher.hash_one(key);
        self.held
            .iter()
            .any(|(held, until)| *held == hash && *until > now)
            || lock(self.set).holds(key, now)
    }
}

/// Applies and commits one group of jobs; every job's reply is sent after the commit, with
/// the commit's outcome, and after its short-lived keys are in `short_lived`.
fn commit(
    db: &Database,
    jobs: Vec<Job>,
    sweep: bool,
    mut fleeting: Fleeting<'_>,
    outbox_index: &mut OutboxIndex,
) -> Result<(), StoreError> {
    let short_lived = fleeting.set;
    let mut done = Vec::with_capacity(jobs.len());
    let outcome = (|| -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(backend)?;
        let now = now_ms();
        let mut expiring = Expiring::default();
        let mut stats = StatsPending::default();
        let mut tables = Tables::open(&txn).map_err(backend)?;
        for job in jobs {
            match job {
                Job::Write { batch, reply } => {
                    let mut sinks = Sinks {
                        expiring: &mut expiring,
                        stats: &mut stats,
                        fleeting: &mut fleeting,
                        outbox_index,
                    };
                    apply_write(&mut tables, batch, now, &mut sinks).map_err(backend)?;
                    done.push(Done::Write(reply));
                }
                Job::Append {
                    feed,
                    key,
                    json,
                    keep,
                    reply,
                } => {
                    let appended =
                        apply_append(&mut tables, &feed, &key, &json, keep, now, &mut expiring)
                            .map_err(backend)?;
                    done.push(Done::Append(reply, appended));
                }
                Job::OutboxPut {
                    account,
                    entry,
                    reply,
                } => {
                    let added = apply_outbox_put(
                        &mut tables,
                        outbox_index,
                        &account,
                        &entry,
                        now,
                        &fleeting,
                    )
                    .map_err(backend)?;
                    done.push(Done::OutboxPut(reply, added));
                }
            }
        }
        let feed_seqs = std::mem::take(&mut tables.feed_seqs);
        feed_seqs.write(&mut tables.meta).map_err(backend)?;
        expiring.write(&txn, &mut tables.meta).map_err(backend)?;
        // The sweep and the group-health counts open tables of their own.
        drop(tables);
        stats.apply(&txn).map_err(backend)?;
        if sweep {
            let removed = sweep_expired(&txn, now).map_err(backend)?;
            if removed > 0 {
                debug!(message = "State store swept.", removed);
            }
        }
        txn.commit().map_err(backend)
    })();
    if outcome.is_ok() {
        outbox_index.committed();
        let mut keys = lock(short_lived);
        for (hash, until) in fleeting.held {
            keys.insert(hash, until);
        }
        if sweep {
            keys.forget_expired(now_ms());
        }
    }
    if outcome.is_err() {
        outbox_index.rolled_back();
    }
    for item in done {
        match item {
            Done::Write(reply) => {
                let _ = reply.send(outcome.clone());
            }
            Done::Append(reply, appended) => {
                let _ = reply.send(outcome.clone().map(|()| appended));
            }
            Done::OutboxPut(reply, added) => {
                let _ = reply.send(outcome.clone().map(|()| added));
            }
        }
    }
    // Jobs not reached when the transaction failed drop their replies: callers see Stopped.
    outcome
}

/// The tables the jobs of one commit write, opened once for the whole commit rather than
/// once per job.
struct Tables<'txn> {
    /// Dedup, send-log and echo keys ([`KEYS`]).
    keys: redb::Table<'txn, &'static str, u64>,
    /// Message-map origins ([`ORIGINS`]).
    origins: redb::Table<'txn, &'static str, &'static [u8]>,
    /// Message-map copies ([`COPIES`]).
    copies: redb::Table<'txn, &'static str, &'static str>,
    /// Outbox entries ([`OUTBOX`]).
    outbox: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    /// Messages held for review ([`HELD`]).
    held: redb::Table<'txn, &'static str, &'static [u8]>,
    /// api feed events ([`FEED`]).
    feed: redb::Table<'txn, (&'static str, u64), &'static str>,
    /// api feed idempotency keys ([`FEED_KEYS`]).
    feed_keys: redb::Table<'txn, &'static str, (u64, u64)>,
    /// Counters ([`META`]).
    meta: redb::Table<'txn, &'static str, u64>,
    /// The last sequence number of each feed appended to in this commit, written to `meta`
    /// once at its end rather than read and written for every event.
    feed_seqs: FeedSeqs,
}

impl<'txn> Tables<'txn> {
    /// Opens them in `txn`.
    fn open(txn: &'txn WriteTransaction) -> Result<Tables<'txn>, redb::Error> {
        Ok(Tables {
            keys: txn.open_table(KEYS)?,
            origins: txn.open_table(ORIGINS)?,
            copies: txn.open_table(COPIES)?,
            outbox: txn.open_table(OUTBOX)?,
            held: txn.open_table(HELD)?,
            feed: txn.open_table(FEED)?,
            feed_keys: txn.open_table(FEED_KEYS)?,
            meta: txn.open_table(META)?,
            feed_seqs: FeedSeqs::default(),
        })
    }
}

/// A fraction of a feed's `keep`: old events are removed once this many more than `keep`
/// have come (in a batch of them), so a feed holds up to about an eighth more than it
/// keeps. `recent` returns only the newest it is asked for.
const TRIM_FRACTION: u64 = 8;

/// The feeds' sequence numbers within one commit ([`Tables::feed_seqs`]).
#[derive(Default)]
struct FeedSeqs {
    /// A feed (`account␟group`) and its last number.
    last: Vec<(String, u64)>,
}

impl FeedSeqs {
    /// The next number of `feed`: one after the last given out in this commit, or after the
    /// one stored in `meta`.
    fn next(
        &mut self,
        meta: &redb::Table<&'static str, u64>,
        feed: &str,
    ) -> Result<u64, redb::Error> {
        if let Some((_, last)) = self.last.iter_mut().find(|(name, _)| name == feed) {
            *last += 1;
            return Ok(*last);
        }
        let next = meta
            .get(feed_counter(feed).as_str())?
            .map_or(0, |v| v.value())
            + 1;
        self.last.push((feed.to_owned(), next));
        Ok(next)
    }

    /// Stores the last numbers in `meta`.
    fn write(self, meta: &mut redb::Table<&'static str, u64>) -> Result<(), redb::Error> {
        for (feed, last) in &self.last {
            meta.insert(feed_counter(feed).as_str(), *last)?;
        }
        Ok(())
    }
}

/// The meta key of a feed's sequence counter.
fn feed_counter(feed: &str) -> String {
    let mut counter = String::with_capacity(4 + feed.len());
    counter.push_str("seq\u{1f}");
    counter.push_str(feed);
    counter
}

/// Milliseconds from now until `ttl` passes.
fn expiry(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ttl.as_millis() as u64)
}

/// The expiry-index entries of one commit, written as one [`EXPIRING`] row per expiry time
/// when the commit's jobs are applied. An entry whose key is written again later is not
/// taken out: the sweep removes a key only when its expiry is still the entry's.
#[derive(Default)]
struct Expiring {
    /// Names by expiry time (a commit has one per TTL in use).
    by_time: Vec<(u64, Vec<u8>)>,
}

impl Expiring {
    /// Adds `key` of the table `table` (its letter) expiring at `until`.
    fn add(&mut self, until: u64, table: char, key: &str) {
        let at = match self.by_time.iter().position(|(time, _)| *time == until) {
            Some(at) => at,
            None => {
                self.by_time.push((until, Vec::new()));
                self.by_time.len() - 1
            }
        };
        if let Some((_, names)) = self.by_time.get_mut(at) {
            pack(names, table, key);
        }
    }

    /// Writes the rows, each under a serial of its own (kept in `meta`).
    fn write(
        self,
        txn: &WriteTransaction,
        meta: &mut redb::Table<&'static str, u64>,
    ) -> Result<(), redb::Error> {
        if self.by_time.is_empty() {
            return Ok(());
        }
        let mut serial = meta.get(EXPIRING_SERIAL)?.map_or(0, |v| v.value());
        let mut rows = txn.open_table(EXPIRING)?;
        for (until, names) in &self.by_time {
            serial += 1;
            rows.insert((*until, serial), names.as_slice())?;
        }
        meta.insert(EXPIRING_SERIAL, serial)?;
        Ok(())
    }
}

/// Appends a name (the table letter and the key) to packed names: its length as four bytes
/// (little-endian), then its bytes.
fn pack(names: &mut Vec<u8>, table: char, key: &str) {
    let mut letter = [0u8; 4];
    let letter = table.encode_utf8(&mut letter).as_bytes();
    let length = u32::try_from(letter.len() + key.len()).unwrap_or(u32::MAX);
    names.extend_from_slice(&length.to_le_bytes());
    names.extend_from_slice(letter);
    names.extend_from_slice(key.as_bytes());
}

/// The names in packed `bytes`; stops at the first that is cut short or not UTF-8.
fn unpack(bytes: &[u8]) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = bytes;
    while let Some((length, tail)) = rest.split_first_chunk::<4>() {
        let length = u32::from_le_bytes(*length) as usize;
        let Some((name, tail)) = tail.split_at_checked(length) else {
            break;
        };
        let Ok(name) = std::str::from_utf8(name) else {
            break;
        };
        names.push(name);
        rest = tail;
    }
    names
}

/// What a commit gathers from its writes besides the tables: expiry rows, group-health
/// counts, short-lived keys.
struct Sinks<'c, 'f> {
    /// The commit's expiry rows.
    expiring: &'c mut Expiring,
    /// The commit's group-health counts.
    stats: &'c mut StatsPending,
    /// The commit's short-lived keys.
    fleeting: &'c mut Fleeting<'f>,
    /// Where outbox entries are, to settle them.
    outbox_index: &'c mut OutboxIndex,
}

/// Writes keys, message-map copies and settled outbox entries; the group-health counts go to
/// `stats`, applied once for the whole commit.
fn apply_write(
    tables: &mut Tables<'_>,
    batch: WriteBatch,
    now: u64,
    sinks: &mut Sinks<'_, '_>,
) -> Result<(), redb::Error> {
    let Sinks {
        expiring,
        stats,
        fleeting,
        outbox_index,
    } = sinks;
    for (key, ttl) in &batch.keys {
        let until = expiry(now, *ttl);
        if fleeting.take(key, *ttl, until) {
            expiring.add(until, IN_MEMORY, key);
        } else {
            fleeting.table_letters.note(key);
            tables.keys.insert(key.as_str(), until)?;
            expiring.add(until, IN_KEYS, key);
        }
    }
    for record in batch.copies {
        add_copies(
            &mut tables.origins,
            &mut tables.copies,
            expiring,
            record,
            now,
        )?;
    }
    for (account, key) in &batch.outbox_done {
        if let Some(seq) = outbox_index.take(&outbox_name(account, key)) {
            tables.outbox.remove((account.as_str(), seq))?;
        }
    }
    for entry in &batch.held {
        tables
            .held
            .insert(entry.id.as_str(), entry.encode().as_slice())?;
    }
    for id in &batch.held_done {
        tables.held.remove(id.as_str())?;
    }
    stats.add(batch.stats);
    if batch.stats_sweep.is_some() {
        stats.sweep = batch.stats_sweep;
    }
    Ok(())
}

/// The group-health counts of one commit, merged by row before the tables are touched: the
/// counts of many messages of one group and day cost one row read and one row write.
#[derive(Default)]
struct StatsPending {
    /// Counts to add, by row key.
    rows: BTreeMap<String, DayCounts>,
    /// Sender digests to add, by their table key (`<row key>|<digest>`).
    senders: BTreeSet<String>,
    /// A sweep asked by one of the commit's writes, run after the counts are added.
    sweep: Option<stats::StatsSweep>,
}

impl StatsPending {
    /// Takes a write's deltas.
    fn add(&mut self, deltas: Vec<StatsDelta>) {
        for delta in deltas {
            let key = stats::row_key(delta.day, &delta.account, &delta.group);
            for digest in &delta.senders {
                let mut sender = String::with_capacity(key.len() + 1 + digest.len());
                sender.push_str(&key);
                sender.push('|');
                sender.push_str(digest);
                self.senders.insert(sender);
            }
            if !delta.counts.is_empty() {
                self.rows.entry(key).or_default().merge(&delta.counts);
            }
        }
    }

    /// Adds the counts to their day rows and the digests to their sets, then sweeps.
    fn apply(self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        if !self.rows.is_empty() || !self.senders.is_empty() {
            let mut rows = txn.open_table(STATS_ROWS)?;
            for (key, delta) in &self.rows {
                let mut counts: DayCounts = rows
                    .get(key.as_str())?
                    .and_then(|v| serde_json::from_slice(v.value()).ok())
                    .unwrap_or_default();
                counts.merge(delta);
                let json = serde_json::to_vec(&counts).unwrap_or_default();
                rows.insert(key.as_str(), json.as_slice())?;
            }
            let mut senders = txn.open_table(STATS_SENDERS)?;
            for name in &self.senders {
                senders.insert(name.as_str(), ())?;
            }
        }
        if let Some(sweep) = self.sweep {
            sweep_stats(txn, sweep)?;
        }
        Ok(())
    }
}

/// Removes day rows and sender digests past their age, then the oldest of either table while
/// it holds more than its cap.
fn sweep_stats(txn: &WriteTransaction, sweep: stats::StatsSweep) -> Result<(), redb::Error> {
    let rows_end = stats::day_text(sweep.rows_before);
    let mut rows = txn.open_table(STATS_ROWS)?;
    rows.retain_in(..rows_end.as_str(), |_, _| false)?;
    for _ in 0..rows.len()?.saturating_sub(sweep.max_rows) {
        rows.pop_first()?;
    }
    let senders_end = stats::day_text(sweep.senders_before);
    let mut senders = txn.open_table(STATS_SENDERS)?;
    senders.retain_in(..senders_end.as_str(), |_, _| false)?;
    for _ in 0..senders.len()?.saturating_sub(sweep.max_digests) {
        senders.pop_first()?;
    }
    Ok(())
}

/// The outbox index name of a message.
fn outbox_name(account: &str, key: &str) -> String {
    let mut name = String::with_capacity(account.len() + 1 + key.len());
    name.push_str(account);
    name.push('\u{1f}');
    name.push_str(key);
    name
}

/// Puts an outbox entry unless it was sent (its key is held, in the key table or among the
/// short-lived keys) or is there already.
fn apply_outbox_put(
    tables: &mut Tables<'_>,
    outbox_index: &mut OutboxIndex,
    account: &str,
    entry: &OutboxEntry,
    now: u64,
    fleeting: &Fleeting<'_>,
) -> Result<bool, redb::Error> {
    let sent = fleeting.holds(&entry.key, now)
        || tables
            .keys
            .get(entry.key.as_str())?
            .is_some_and(|until| until.value() > now);
    if sent {
        return Ok(false);
    }
    let name = outbox_name(account, &entry.key);
    if outbox_index.contains(&name) {
        return Ok(false);
    }
    let seq = outbox_index.add(name);
    tables
        .outbox
        .insert((account, seq), entry.encode().as_slice())?;
    Ok(true)
}

/// Adds one origin's copies to the map.
fn add_copies(
    origins: &mut redb::Table<&str, &[u8]>,
    copies: &mut redb::Table<&str, &str>,
    expiring: &mut Expiring,
    record: CopyRecord,
    now: u64,
) -> Result<(), redb::Error> {
    let existing = origins
        .get(record.origin_key.as_str())?
        .and_then(|v| serde_json::from_slice::<StoredOrigin>(v.value()).ok());
    let mut stored = match existing {
        Some(stored) => stored,
        None => {
            let until = expiry(now, MAP_TTL);
            expiring.add(until, IN_ORIGINS, &record.origin_key);
            let mut entry = record.origin;
            entry.copies.clear();
            StoredOrigin {
                entry,
                expires_ms: until,
            }
        }
    };
    for copy in record.copies {
        let copy_key = super::keys::origin(&copy.account, &copy.group, &copy.id);
        copies.insert(copy_key.as_str(), record.origin_key.as_str())?;
        if !stored.entry.copies.contains(&copy) {
            stored.entry.copies.push(copy);
        }
    }
    let bytes = serde_json::to_vec(&stored).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    origins.insert(record.origin_key.as_str(), bytes.as_slice())?;
    Ok(())
}

/// An origin entry as stored, with its expiry.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredOrigin {
    /// The entry.
    entry: OriginEntry,
    /// When it expires (ms since the epoch).
    expires_ms: u64,
}

/// Appends an api feed event unless its key is already there.
fn apply_append(
    tables: &mut Tables<'_>,
    feed: &str,
    key: &str,
    json: &str,
    keep: usize,
    now: u64,
    expiring: &mut Expiring,
) -> Result<Appended, redb::Error> {
    let Tables {
        feed_keys,
        meta,
        feed: events,
        feed_seqs,
        ..
    } = tables;
    let earlier = feed_keys.get(key)?.map(|v| v.value());
    if let Some((seq, until)) = earlier {
        if until > now {
            return Ok(Appended { seq, fresh: false });
        }
    }
    let seq = feed_seqs.next(meta, feed)?;
    events.insert((feed, seq), json)?;
    let keep = keep.max(1) as u64;
    let batch = (keep / TRIM_FRACTION).max(1);
    if seq > keep && (seq - keep) % batch == 0 {
        // Events before the kept window go, a batch at a time: one removal of a run of
        // neighbours costs about what removing one does.
        let first_kept = seq - keep + 1;
        events.retain_in((feed, 0)..(feed, first_kept), |_, _| false)?;
    }
    let until = expiry(now, DEDUP_TTL);
    feed_keys.insert(key, (seq, until))?;
    expiring.add(until, IN_FEED_KEYS, key);
    Ok(Appended { seq, fresh: true })
}

/// Removes what has expired, then the soonest-expiring entries of any table over its cap:
/// first what the expiry index of an older store names ([`EXPIRY`]), then what the batched
/// index names ([`EXPIRING`]). Returns how many entries went.
fn sweep_expired(txn: &WriteTransaction, now: u64) -> Result<usize, redb::Error> {
    let mut tables = Swept {
        keys: txn.open_table(KEYS)?,
        origins: txn.open_table(ORIGINS)?,
        copies: txn.open_table(COPIES)?,
        feed_keys: txn.open_table(FEED_KEYS)?,
    };
    let legacy = sweep_legacy_index(txn, &mut tables, now)?;
    let batched = sweep_expiring(txn, &mut tables, now, SWEEP_MAX.saturating_sub(legacy))?;
    Ok(legacy + batched)
}

/// The tables a sweep removes entries from.
struct Swept<'txn> {
    /// Dedup, send-log and echo keys.
    keys: redb::Table<'txn, &'static str, u64>,
    /// Message-map origins.
    origins: redb::Table<'txn, &'static str, &'static [u8]>,
    /// Message-map copies, which go with their origin.
    copies: redb::Table<'txn, &'static str, &'static str>,
    /// api feed idempotency keys.
    feed_keys: redb::Table<'txn, &'static str, (u64, u64)>,
}

impl Swept<'_> {
    /// Entries over each table's cap: (keys, origins, feed keys).
    fn over(&self) -> Result<[u64; 3], redb::Error> {
        Ok([
            self.keys.len()?.saturating_sub(MAX_KEYS),
            self.origins.len()?.saturating_sub(MAX_ORIGINS),
            self.feed_keys.len()?.saturating_sub(MAX_FEED_KEYS),
        ])
    }

    /// Removes the entry an index `name` (table letter + key) names, indexed to expire at
    /// `until`; a key or feed key written again since (another expiry) stays. True when an
    /// entry went.
    fn remove(&mut self, until: u64, name: &str) -> Result<bool, redb::Error> {
        let key = name.get(1..).unwrap_or_default();
        match name.chars().next() {
            Some(IN_KEYS) => {
                let current = self.keys.get(key)?.map(|v| v.value());
                if current == Some(until) {
                    self.keys.remove(key)?;
                    return Ok(true);
                }
            }
            Some(IN_ORIGINS) => {
                let stored = self
                    .origins
                    .remove(key)?
                    .map(|v| serde_json::from_slice::<StoredOrigin>(v.value()));
                if let Some(stored) = stored {
                    for copy in stored.map(|s| s.entry.copies).unwrap_or_default() {
                        self.copies.remove(
                            super::keys::origin(&copy.account, &copy.group, &copy.id).as_str(),
                        )?;
                    }
                    return Ok(true);
                }
            }
            // Only the expiry row names it; the set in memory drops it after the sweep.
            Some(IN_MEMORY) => return Ok(true),
            Some(IN_FEED_KEYS) => {
                let current = self.feed_keys.get(key)?.map(|v| v.value().1);
                if current == Some(until) {
                    self.feed_keys.remove(key)?;
                    return Ok(true);
                }
            }
            _ => {}
        }
        Ok(false)
    }
}

/// The slot of [`Swept::over`] for the table of an index name; `None` for a name of no table.
fn table_slot(name: &str) -> Option<usize> {
    match name.chars().next() {
        Some(IN_KEYS) => Some(0),
        Some(IN_ORIGINS) => Some(1),
        Some(IN_FEED_KEYS) => Some(2),
        _ => None,
    }
}

/// Sweeps the per-key expiry index an older store still holds ([`EXPIRY`]); nothing new is
/// added to it. Returns how many entries went.
fn sweep_legacy_index(
    txn: &WriteTransaction,
    tables: &mut Swept<'_>,
    now: u64,
) -> Result<usize, redb::Error> {
    let mut index = txn.open_table(EXPIRY)?;
    let mut over = tables.over()?;
    let mut doomed: Vec<(u64, String)> = Vec::new();
    for entry in index.range::<(u64, &str)>(..)? {
        let (key, _) = entry?;
        let (until, name) = key.value();
        let expired = until <= now;
        if !expired && over == [0; 3] {
            break;
        }
        let slot = table_slot(name);
        let over_cap = slot.is_none_or(|slot| over[slot] > 0);
        if expired || over_cap {
            if let Some(slot) = slot {
                over[slot] = over[slot].saturating_sub(1);
            }
            doomed.push((until, name.to_owned()));
        }
        if doomed.len() >= SWEEP_MAX {
            break;
        }
    }
    let mut removed = 0;
    for (until, name) in doomed {
        index.remove((until, name.as_str()))?;
        tables.remove(until, &name)?;
        removed += 1;
    }
    Ok(removed)
}

/// Sweeps the batched expiry index ([`EXPIRING`]), a row at a time, oldest first, until a
/// row neither expired nor needed for a table over its cap, or until `budget` entries went
/// (a row is always finished). A row left with names of tables not over their cap is
/// written back with just those. Returns how many entries went.
fn sweep_expiring(
    txn: &WriteTransaction,
    tables: &mut Swept<'_>,
    now: u64,
    budget: usize,
) -> Result<usize, redb::Error> {
    let mut rows = txn.open_table(EXPIRING)?;
    let mut over = tables.over()?;
    let mut removed = 0;
    let mut from = (0, 0);
    while removed < budget {
        let next = rows
            .range(from..)?
            .next()
            .transpose()?
            .map(|(key, names)| (key.value(), names.value().to_vec()));
        let Some(((until, serial), names)) = next else {
            break;
        };
        let Some(after) = serial.checked_add(1) else {
            break;
        };
        from = (until, after);
        let expired = until <= now;
        if !expired && over == [0; 3] {
            break;
        }
        let mut kept = Vec::new();
        for name in unpack(&names) {
            let slot = table_slot(name);
            let over_cap = slot.is_some_and(|slot| over[slot] > 0);
            if !expired && !over_cap {
                let key = name.get(1..).unwrap_or_default();
                if let Some(table) = name.chars().next() {
                    pack(&mut kept, table, key);
                }
                continue;
            }
            if tables.remove(until, name)? {
                removed += 1;
                if let Some(slot) = slot {
                    over[slot] = over[slot].saturating_sub(1);
                }
            }
        }
        if kept.is_empty() {
            rows.remove((until, serial))?;
        } else {
            rows.insert((until, serial), kept.as_slice())?;
        }
    }
    Ok(removed)
}

impl RelayStore for PersistentStore {
    fn holds_any<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = now_ms();
        let in_memory = {
            let short_lived = lock(&self.short_lived);
            keys.iter().any(|key| short_lived.holds(key, now))
        };
        if in_memory {
            return Box::pin(async { Ok(true) });
        }
        if !keys.iter().any(|key| self.table_letters.may_hold(key)) {
            return Box::pin(async { Ok(false) });
        }
        let held = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(KEYS).map_err(backend)?;
            for key in keys.iter().filter(|key| self.table_letters.may_hold(key)) {
                if let Some(until) = table.get(key.as_str()).map_err(backend)? {
                    if until.value() > now {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })();
        Box::pin(async move { held })
    }

    fn feed_holds<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = now_ms();
        let held = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(FEED_KEYS).map_err(backend)?;
            let until = table.get(key).map_err(backend)?.map(|v| v.value().1);
            Ok(until.is_some_and(|until| until > now))
        })();
        Box::pin(async move { held })
    }

    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let (reply, outcome) = oneshot::channel();
            self.submit(Job::Write { batch, reply })?;
            outcome.await.map_err(|_| StoreError::Stopped)?
        })
    }

    fn origin<'a>(
        &'a self,
        origin_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<OriginEntry>, StoreError>> {
        let entry = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(ORIGINS).map_err(backend)?;
            let value = table.get(origin_key).map_err(backend)?;
            Ok(value.and_then(|v| {
                serde_json::from_slice::<StoredOrigin>(v.value())
                    .ok()
                    .filter(|stored| stored.expires_ms > now_ms())
                    .map(|stored| stored.entry)
            }))
        })();
        Box::pin(async move { entry })
    }

    fn origin_of_copy<'a>(
        &'a self,
        copy_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let origin = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(COPIES).map_err(backend)?;
            let value = table.get(copy_key).map_err(backend)?;
            Ok(value.map(|v| v.value().to_owned()))
        })();
        Box::pin(async move { origin })
    }

    fn outbox_put(&self, account: &str, entry: OutboxEntry) -> OutboxPut {
        // Queued now, not when the future is first polled: a settle written later is applied
        // after it.
        let (reply, outcome) = oneshot::channel();
        let submitted = self.submit(Job::OutboxPut {
            account: account.to_owned(),
            entry,
            reply,
        });
        Box::pin(async move {
            submitted?;
            outcome.await.map_err(|_| StoreError::Stopped)?
        })
    }

    fn stats_rows(
        &self,
        from: stats::Day,
        to: stats::Day,
    ) -> BoxFuture<'_, Result<Vec<DayRow>, StoreError>> {
        let rows = self.read_stats_rows(from, to);
        Box::pin(async move { rows })
    }

    fn stats_senders<'a>(
        &'a self,
        account: &'a str,
        group: &'a str,
        from: stats::Day,
        to: stats::Day,
    ) -> BoxFuture<'a, Result<DaySenders, StoreError>> {
        let days = self.read_stats_senders(account, group, from, to);
        Box::pin(async move { days })
    }

    fn held(&self) -> BoxFuture<'_, Result<Vec<HeldEntry>, StoreError>> {
        let entries = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(HELD).map_err(backend)?;
            let mut entries = Vec::new();
            for row in table.iter().map_err(backend)? {
                let (id, value) = row.map_err(backend)?;
                match HeldEntry::decode(value.value()) {
                    Some(entry) => entries.push(entry),
                    None => warn!(message = "Skipping an unreadable held entry.", id = %id.value()),
                }
            }
            super::held::oldest_first(&mut entries);
            Ok(entries)
        })();
        Box::pin(async move { entries })
    }

    fn outbox<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>> {
        let entries = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let table = txn.open_table(OUTBOX).map_err(backend)?;
            let mut entries = Vec::new();
            for row in table
                .range((account, 0)..=(account, u64::MAX))
                .map_err(backend)?
            {
                let (_, value) = row.map_err(backend)?;
                match OutboxEntry::decode(value.value()) {
                    Some(entry) => entries.push(entry),
                    None => {
                        warn!(message = "Skipping an unreadable outbox entry.", account = %account)
                    }
                }
            }
            Ok(entries)
        })();
        Box::pin(async move { entries })
    }
}

impl PersistentStore {
    /// Day rows from `from` to `to`, both included.
    fn read_stats_rows(&self, from: stats::Day, to: stats::Day) -> Result<Vec<DayRow>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(STATS_ROWS).map_err(backend)?;
        let (start, end) = (stats::day_text(from), stats::day_text(to.saturating_add(1)));
        let mut rows = Vec::new();
        for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
            let (key, value) = row.map_err(backend)?;
            let Some((day, account, group)) = stats::parse_row_key(key.value()) else {
                continue;
            };
            let Ok(counts) = serde_json::from_slice::<DayCounts>(value.value()) else {
                warn!(message = "Skipping an unreadable group-health row.", key = %key.value());
                continue;
            };
            rows.push(DayRow {
                account: account.to_owned(),
                group: group.to_owned(),
                day,
                counts,
            });
        }
        Ok(rows)
    }

    /// Sender digests of one group, per day from `from` to `to`.
    fn read_stats_senders(
        &self,
        account: &str,
        group: &str,
        from: stats::Day,
        to: stats::Day,
    ) -> Result<DaySenders, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(STATS_SENDERS).map_err(backend)?;
        let mut days = Vec::new();
        for day in from..=to {
            // `|` + 1 is `}`: every key under the prefix `day|account|group|`.
            let prefix = stats::row_key(day, account, group);
            let (start, end) = (format!("{prefix}|"), format!("{prefix}}}"));
            let mut digests = Vec::new();
            for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (key, _) = row.map_err(backend)?;
                if let Some(digest) = key.value().strip_prefix(start.as_str()) {
                    digests.push(digest.to_owned());
                }
            }
            if !digests.is_empty() {
                days.push((day, digests));
            }
        }
        Ok(days)
    }
}

impl FeedLog for PersistentStore {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn recent(
        &self,
        account: &str,
        group: &str,
        limit: usize,
    ) -> Result<(Vec<(u64, String)>, u64), FeedLogError> {
        let feed = format!("{account}\u{1f}{group}");
        let read = || -> Result<(Vec<(u64, String)>, u64), redb::Error> {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let last = meta
                .get(feed_counter(&feed).as_str())?
                .map_or(0, |v| v.value());
            let events = txn.open_table(FEED)?;
            let first = last.saturating_sub(limit as u64) + 1;
            let mut out = Vec::new();
            if last == 0 || limit == 0 {
                return Ok((out, last + 1));
            }
            for entry in events.range((feed.as_str(), first)..=(feed.as_str(), last))? {
                let (key, value) = entry?;
                out.push((key.value().1, value.value().to_owned()));
            }
            Ok((out, last + 1))
        };
        read().map_err(|error| FeedLogError(error.to_string()))
    }

    fn append(
        &self,
        account: String,
        group: String,
        key: String,
        json: String,
        keep: usize,
    ) -> BoxFuture<'static, Result<Appended, FeedLogError>> {
        // Queued now, not when the future is first polled: appends are applied in call order.
        let (reply, outcome) = oneshot::channel();
        let submitted = self.submit(Job::Append {
            feed: format!("{account}\u{1f}{group}"),
            key,
            json,
            keep,
            reply,
        });
        Box::pin(async move {
            submitted.map_err(|error| FeedLogError(error.to_string()))?;
            outcome
                .await
                .map_err(|_| FeedLogError(StoreError::Stopped.to_string()))?
                .map_err(|error| FeedLogError(error.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Copy;

    fn batch(keys: &[&str], ttl: Duration) -> WriteBatch {
        WriteBatch {
            keys: keys.iter().map(|k| ((*k).to_owned(), ttl)).collect(),
            ..Default::default()
        }
    }

    fn owned(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[tokio::test]
    async fn what_was_written_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let epoch;
        {
            let store = PersistentStore::open(dir.path()).expect("open");
            epoch = store.epoch();
            store
                .write(batch(&["a", "b"], Duration::from_secs(3600)))
                .await
                .expect("write");
            store
                .write(WriteBatch {
                    keys: Vec::new(),
                    copies: vec![CopyRecord {
                        origin_key: "m-origin".into(),
                        origin: OriginEntry {
                            account: "qq".into(),
                            group: "1".into(),
                            message_id: "100".into(),
                            excerpt: "Ann: hi".into(),
                            copies: Vec::new(),
                        },
                        copies: vec![Copy {
                            account: "wx".into(),
                            group: "w".into(),
                            id: "w-7".into(),
                        }],
                    }],
                    ..Default::default()
                })
                .await
                .expect("write");
            let first = store
                .append("api".into(), "g".into(), "k1".into(), "e1".into(), 2)
                .await
                .expect("append");
            assert_eq!(
                first,
                Appended {
                    seq: 1,
                    fresh: true
                }
            );
        }
        let store = PersistentStore::open(dir.path()).expect("reopen");
        assert_eq!(store.epoch(), epoch, "the feed epoch is kept");
        assert!(store.holds_any(&owned(&["b"])).await.expect("read"));
        assert!(!store.holds_any(&owned(&["c"])).await.expect("read"));
        let entry = store
            .origin("m-origin")
            .await
            .expect("read")
            .expect("entry");
        assert_eq!(entry.copies[0].id, "w-7");
        assert_eq!(
            store
                .origin_of_copy(&crate::store::keys::origin("wx", "w", "w-7"))
                .await
                .expect("read")
                .as_deref(),
            Some("m-origin")
        );
        // The same feed key again is not a new event; the feed keeps 2 events.
        let again = store
            .append("api".into(), "g".into(), "k1".into(), "e1".into(), 2)
            .await
            .expect("append");
        assert_eq!(
            again,
            Appended {
                seq: 1,
                fresh: false
            }
        );
        for n in 2..=4 {
            store
                .append(
                    "api".into(),
                    "g".into(),
                    format!("k{n}"),
                    format!("e{n}"),
                    2,
                )
                .await
                .expect("append");
        }
        let (events, next) = store.recent("api", "g", 10).expect("recent");
        assert_eq!(events, vec![(3, "e3".to_owned()), (4, "e4".to_owned())]);
        assert_eq!(next, 5);
    }

    /// Appends event `n` (key `k<n>`, text `e<n>`) to feed `api`/`g`, keeping `keep`.
    fn append_numbered(
        store: &PersistentStore,
        n: u64,
        keep: usize,
    ) -> BoxFuture<'static, Result<Appended, FeedLogError>> {
        store.append(
            "api".into(),
            "g".into(),
            format!("k{n}"),
            format!("e{n}"),
            keep,
        )
    }

    #[tokio::test]
    async fn a_feed_is_numbered_in_order_within_a_commit_and_trimmed_in_batches_to_what_it_keeps() {
        const KEEP: usize = 16;
        let appended = |seq, fresh| Appended { seq, fresh };
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = PersistentStore::open(dir.path()).expect("open");
            // Queued together, so that commits carry several appends of the feed.
            let appends: Vec<_> = (1..=40).map(|n| append_numbered(&store, n, KEEP)).collect();
            for (n, append) in (1u64..).zip(appends) {
                assert_eq!(append.await.expect("append"), appended(n, true));
            }
            let (events, next) = store.recent("api", "g", KEEP).expect("recent");
            let expected: Vec<(u64, String)> = (25..=40).map(|n| (n, format!("e{n}"))).collect();
            assert_eq!(events, expected);
            assert_eq!(next, 41);
            let held = store.counts().expect("counts").feed_events;
            // Removed a batch (an eighth of what it keeps) at a time: 40 is a batch boundary.
            assert_eq!(held, KEEP as u64, "events held after 40 appends");
            append_numbered(&store, 41, KEEP).await.expect("append");
            let held = store.counts().expect("counts").feed_events;
            assert_eq!(held, KEEP as u64 + 1, "one more until the next batch");
        }
        let store = PersistentStore::open(dir.path()).expect("reopen");
        let again = append_numbered(&store, 7, KEEP).await.expect("append");
        assert_eq!(again, appended(7, false), "its key is remembered");
        let next = append_numbered(&store, 42, KEEP).await.expect("append");
        assert_eq!(next, appended(42, true), "numbers go on after reopening");
        let (events, _) = store.recent("api", "g", KEEP).expect("recent");
        assert_eq!(events.first().map(|e| e.0), Some(27));
        assert_eq!(events.last().map(|e| e.0), Some(42));
    }

    fn waiting(key: &str) -> OutboxEntry {
        OutboxEntry {
            key: key.to_owned(),
            payload: format!("{{\"text\":\"{key}\"}}").into_bytes(),
            queued_ms: 1,
        }
    }

    async fn outbox_keys(store: &PersistentStore, account: &str) -> Vec<String> {
        let entries = store.outbox(account).await.expect("outbox");
        entries.into_iter().map(|entry| entry.key).collect()
    }

    #[tokio::test]
    async fn outbox_entries_are_put_once_settled_by_key_and_kept_in_order_across_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = PersistentStore::open(dir.path()).expect("open");
            for key in ["s1", "s2", "s3"] {
                assert!(store.outbox_put("qq", waiting(key)).await.expect("put"));
            }
            assert!(store.outbox_put("wx", waiting("s1")).await.expect("put"));
            // Waiting already: not put twice.
            assert!(!store.outbox_put("qq", waiting("s2")).await.expect("put"));
            // Settled: out of the outbox and in the send log, so not put again.
            store
                .write(WriteBatch {
                    keys: vec![("s2".into(), Duration::from_secs(3600))],
                    outbox_done: vec![("qq".into(), "s2".into())],
                    ..Default::default()
                })
                .await
                .expect("settle");
            assert!(!store.outbox_put("qq", waiting("s2")).await.expect("put"));
            assert_eq!(outbox_keys(&store, "qq").await, ["s1", "s3"]);
            assert_eq!(outbox_keys(&store, "wx").await, ["s1"]);
        }
        let store = PersistentStore::open(dir.path()).expect("reopen");
        assert_eq!(outbox_keys(&store, "qq").await, ["s1", "s3"]);
        // What waited before the restart is known to wait; what comes now queues behind it.
        assert!(!store.outbox_put("qq", waiting("s3")).await.expect("put"));
        assert!(store.outbox_put("qq", waiting("s4")).await.expect("put"));
        store
            .write(WriteBatch {
                outbox_done: vec![("qq".into(), "s1".into()), ("wx".into(), "s1".into())],
                ..Default::default()
            })
            .await
            .expect("settle");
        assert_eq!(outbox_keys(&store, "qq").await, ["s3", "s4"]);
        assert!(outbox_keys(&store, "wx").await.is_empty());
        assert_eq!(store.counts().expect("counts").outbox, 2);
    }

    #[tokio::test]
    async fn an_older_store_with_an_outbox_index_table_opens_and_settles_its_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // The layout before the index was held in memory: entries, their index rows and
            // the last sequence number in the meta table.
            let db = Database::create(dir.path().join(FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let mut outbox = txn.open_table(OUTBOX).expect("outbox");
                let mut index = txn.open_table(OUTBOX_INDEX).expect("index");
                let mut meta = txn.open_table(META).expect("meta");
                for (seq, key) in [(5u64, "old1"), (9, "old2")] {
                    outbox
                        .insert(("qq", seq), waiting(key).encode().as_slice())
                        .expect("insert");
                    index
                        .insert(outbox_name("qq", key).as_str(), seq)
                        .expect("insert");
                }
                meta.insert(OUTBOX_SEQ, 12).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let store = PersistentStore::open(dir.path()).expect("open");
        assert!(!store.outbox_put("qq", waiting("old2")).await.expect("put"));
        assert!(store.outbox_put("qq", waiting("new")).await.expect("put"));
        store
            .write(WriteBatch {
                outbox_done: vec![("qq".into(), "old1".into())],
                ..Default::default()
            })
            .await
            .expect("settle");
        assert_eq!(outbox_keys(&store, "qq").await, ["old2", "new"]);
        let txn = store.db.begin_read().expect("read");
        assert!(
            txn.open_table(OUTBOX_INDEX).is_err(),
            "the index table is gone"
        );
    }

    #[tokio::test]
    async fn expired_keys_are_not_held_and_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PersistentStore::open(dir.path()).expect("open");
        store
            .write(batch(&["short"], Duration::from_millis(1)))
            .await
            .expect("write");
        store
            .write(batch(&["long"], Duration::from_secs(3600)))
            .await
            .expect("write");
        // Short-lived keys are held to the second, rounded up.
        tokio::time::sleep(Duration::from_millis(1_010)).await;
        assert!(!store.holds_any(&owned(&["short"])).await.expect("read"));
        let txn = store.db.begin_write().expect("txn");
        let removed = sweep_expired(&txn, now_ms()).expect("sweep");
        txn.commit().expect("commit");
        assert_eq!(removed, 1, "only the expired key goes");
        assert_eq!(store.counts().expect("counts").keys, 1);
        assert!(store.holds_any(&owned(&["long"])).await.expect("read"));
    }

    #[tokio::test]
    async fn one_commit_adds_a_row_per_expiry_and_a_rewritten_key_outlives_its_first_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PersistentStore::open(dir.path()).expect("open");
        let rows = |store: &PersistentStore| {
            let txn = store.db.begin_read().expect("txn");
            txn.open_table(EXPIRING).expect("table").len().expect("len")
        };
        let mut three = batch(&["a", "b", "c"], Duration::from_millis(1));
        three.keys.push(("d".into(), Duration::from_secs(3600)));
        store.write(three).await.expect("write");
        assert_eq!(rows(&store), 2, "one row per expiry time, not per key");
        // "b" is written again with a long life: its first row must not take it.
        store
            .write(batch(&["b"], Duration::from_secs(3600)))
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let txn = store.db.begin_write().expect("txn");
        let removed = sweep_expired(&txn, now_ms()).expect("sweep");
        txn.commit().expect("commit");
        // a, b and c lived a millisecond, so they were held in memory; b's second write, with
        // a long life, went to the table.
        assert_eq!(removed, 3, "a, c and b's short-lived first entry went");
        assert!(store.holds_any(&owned(&["b"])).await.expect("read"));
        assert!(store.holds_any(&owned(&["d"])).await.expect("read"));
        assert_eq!(store.counts().expect("counts").keys, 2);
        assert_eq!(
            rows(&store),
            2,
            "the expired row went; b's and d's rows stay"
        );
    }

    #[tokio::test]
    async fn the_per_key_index_of_an_older_store_is_still_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PersistentStore::open(dir.path()).expect("open");
        let past = now_ms() - 1;
        {
            // As an older version wrote a key: in the table and in the per-key index.
            let txn = store.db.begin_write().expect("txn");
            txn.open_table(KEYS)
                .expect("keys")
                .insert("old", past)
                .expect("insert");
            txn.open_table(EXPIRY)
                .expect("index")
                .insert((past, "kold"), ())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let txn = store.db.begin_write().expect("txn");
        let removed = sweep_expired(&txn, now_ms()).expect("sweep");
        txn.commit().expect("commit");
        assert_eq!(removed, 1);
        assert_eq!(store.counts().expect("counts").keys, 0);
        let txn = store.db.begin_read().expect("txn");
        assert_eq!(
            txn.open_table(EXPIRY).expect("index").len().expect("len"),
            0
        );
    }

    #[tokio::test]
    async fn a_short_lived_key_is_held_in_memory_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = PersistentStore::open(dir.path()).expect("open");
            store
                .write(batch(
                    &["e\u{1f}qq\u{1f}1\u{1f}00ff"],
                    crate::store::ECHO_TTL,
                ))
                .await
                .expect("write");
            store
                .write(batch(&["i\u{1f}qq:1:7"], crate::store::DEDUP_TTL))
                .await
                .expect("write");
            let counts = store.counts().expect("counts");
            assert_eq!(
                (counts.keys, counts.short_lived_keys),
                (1, 1),
                "the echo key is not in the key table"
            );
            assert!(store
                .holds_any(&owned(&["x", "e\u{1f}qq\u{1f}1\u{1f}00ff"]))
                .await
                .expect("read"));
            // A key of a kind held in memory that went to the table is found there too.
            assert!(store
                .holds_any(&owned(&["i\u{1f}qq:1:7"]))
                .await
                .expect("read"));
        }
        let store = PersistentStore::open(dir.path()).expect("reopen");
        assert_eq!(store.counts().expect("counts").short_lived_keys, 1);
        assert!(store
            .holds_any(&owned(&["e\u{1f}qq\u{1f}1\u{1f}00ff"]))
            .await
            .expect("read"));
        assert!(store
            .holds_any(&owned(&["i\u{1f}qq:1:7"]))
            .await
            .expect("read"));
        assert!(!store
            .holds_any(&owned(&["e\u{1f}qq\u{1f}1\u{1f}00fe"]))
            .await
            .expect("read"));
    }

    #[test]
    fn only_a_sustained_stream_lifts_the_job_rate_to_gathering() {
        let ms = Duration::from_millis;
        // 1,000 messages/s, about 2,200 jobs/s, in commits of about a millisecond.
        let mut rate = JobRate::default();
        for _ in 0..500 {
            rate.update(2, ms(1));
        }
        assert!(rate.update(2, ms(1)) < GATHER_RATE);
        // A 20 ms stall, then its backlog in one commit (22,000 jobs/s for 2 ms), then a 5 ms
        // stall's: neither lifts it (a rate over one commit would have started a sleep).
        assert!(rate.update(44, ms(2)) < GATHER_RATE);
        assert!(rate.update(26, ms(12)) < GATHER_RATE);
        for _ in 0..20 {
            rate.update(2, ms(1));
        }
        assert!(rate.update(11, ms(1)) < GATHER_RATE);
        // Saturation, 14,000 jobs/s: above within a few tens of milliseconds, and it stays
        // above across 12 ms sleeps.
        let mut above_after = None;
        for step in 0..100 {
            if rate.update(14, ms(1)) >= GATHER_RATE {
                above_after = Some(step);
                break;
            }
        }
        assert!(
            above_after.is_some_and(|steps| steps < 30),
            "{above_after:?}"
        );
        for _ in 0..10 {
            assert!(rate.update(180, ms(13)) >= GATHER_RATE);
        }
    }

    #[test]
    fn short_lived_keys_past_the_room_in_memory_and_long_lived_keys_go_to_the_table() {
        let hasher = RandomState::new();
        let set = Mutex::new(ShortLived::new(10));
        let letters = TableLetters::default();
        let mut fleeting = Fleeting {
            set: &set,
            hasher: &hasher,
            room: 1,
            held: Vec::new(),
            table_letters: &letters,
        };
        let two_minutes = Duration::from_secs(120);
        assert!(!fleeting.take("long", crate::store::DEDUP_TTL, 9));
        assert!(fleeting.take("first", two_minutes, 9));
        assert!(!fleeting.take("second", two_minutes, 9), "no room left");
        assert_eq!(fleeting.held, vec![(hasher.hash_one("first"), 9)]);
    }

    #[test]
    fn packed_names_read_back_and_a_cut_row_reads_what_is_whole() {
        let mut names = Vec::new();
        pack(&mut names, IN_KEYS, "s\u{1f}qq\u{1f}群");
        pack(&mut names, IN_FEED_KEYS, "");
        assert_eq!(unpack(&names), vec!["ks\u{1f}qq\u{1f}群", "f"]);
        let cut = &names[..names.len() - 1];
        assert_eq!(unpack(cut), vec!["ks\u{1f}qq\u{1f}群"]);
        assert!(unpack(&[0xff, 0xff, 0xff]).is_empty());
    }

    #[test]
    fn a_corrupt_file_is_reported_and_reset_moves_it_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");
        let error = match PersistentStore::open(dir.path()) {
            Ok(_) => panic!("a garbage file must not open"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("--reset-state"), "{error}");
        let aside = PersistentStore::reset(dir.path())
            .expect("rename")
            .expect("moved");
        assert_eq!(std::fs::read(&aside).expect("kept").len(), 8192);
        assert!(PersistentStore::open(dir.path()).is_ok(), "starts empty");
    }

    #[test]
    fn a_second_process_cannot_open_the_same_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = PersistentStore::open(dir.path()).expect("open");
        match PersistentStore::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("opened twice"),
        }
    }
}
