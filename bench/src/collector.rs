//! Receipt bookkeeping of one measured phase: which messages arrived, how late, and when the
//! first and the last one did. Senders put a marker `qb#<phase>#<seq>#<sent ns>#` in each
//! message's text; receivers hand whatever bytes they got (a WebSocket frame, the text of a
//! `send_group_msg`, an MQTT payload) to [`Collector::record`], which finds the markers.
//!
//! Times are nanoseconds since one monotonic instant shared by the whole process
//! ([`now_ns`]), so a latency is simply "received − sent" on the same clock. With
//! `QUNBRIDGE_BENCH_DUMP=DIR` every phase's samples are also written to `DIR/phase-<n>.csv`.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The process's time origin.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's time origin.
pub fn now_ns() -> u64 {
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Where every phase's samples are written as CSV (`QUNBRIDGE_BENCH_DUMP`), for looking at
/// latency over time.
fn dump_dir() -> Option<&'static std::path::Path> {
    static DIR: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| std::env::var_os("QUNBRIDGE_BENCH_DUMP").map(Into::into))
        .as_deref()
}

/// The marker a sender puts in message `seq` of `phase`, sent at `sent_ns`.
pub fn marker(phase: u32, seq: u64, sent_ns: u64) -> String {
    format!("qb#{phase}#{seq}#{sent_ns}#")
}

/// Every marker in `bytes`, as (phase, seq, sent ns).
pub fn markers(bytes: &[u8]) -> Vec<(u32, u64, u64)> {
    let mut found = Vec::new();
    let mut rest = bytes;
    while let Some(at) = find(rest, b"qb#") {
        rest = &rest[at + 3..];
        if let Some((marker, used)) = parse_marker(rest) {
            found.push(marker);
            rest = &rest[used..];
        }
    }
    found
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `<phase>#<seq>#<ns>#` at the start of `bytes`, and how many bytes it took.
fn parse_marker(bytes: &[u8]) -> Option<((u32, u64, u64), usize)> {
    let mut numbers = [0u64; 3];
    let mut at = 0;
    for number in &mut numbers {
        let digits = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 19 || bytes.get(at + digits) != Some(&b'#') {
            return None;
        }
        *number = std::str::from_utf8(&bytes[at..at + digits])
            .ok()?
            .parse()
            .ok()?;
        at += digits + 1;
    }
    let phase = u32::try_from(numbers[0]).ok()?;
    Some(((phase, numbers[1], numbers[2]), at))
}

/// What a phase's receivers saw.
#[derive(Debug, Default)]
struct State {
    /// The phase being counted; markers of other phases are ignored.
    phase: u32,
    /// Which sequence numbers arrived.
    seen: Vec<bool>,
    /// Distinct messages received.
    received: usize,
    /// Messages received more than once.
    duplicates: usize,
    /// Latency of each first receipt, in ns.
    latencies: Vec<u64>,
    /// (seq, sent ns, latency ns) of each first receipt, kept only with
    /// `QUNBRIDGE_BENCH_DUMP` set.
    samples: Vec<(u64, u64, u64)>,
    /// Last receipt.
    last_ns: Option<u64>,
    /// Last receipt of any message of the phase, duplicates included.
    last_any_ns: Option<u64>,
}

/// Counts receipts of the current phase; shared by every receiver of a scenario.
#[derive(Debug, Default)]
pub struct Collector {
    /// The phase's state.
    state: Mutex<State>,
}

/// The outcome of a phase.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Distinct messages received.
    pub received: usize,
    /// Messages received more than once.
    pub duplicates: usize,
    /// Latencies in ns, sorted.
    pub latencies: Vec<u64>,
    /// Last receipt (ns since the origin).
    pub last_ns: Option<u64>,
}

impl Collector {
    /// Starts counting `phase`, whose messages are numbered `0..count`.
    pub fn begin(&self, phase: u32, count: usize) {
        let mut state = self.lock();
        *state = State {
            phase,
            seen: vec![false; count],
            latencies: Vec::with_capacity(count),
            ..State::default()
        };
    }

    /// Records what a receiver got now.
    pub fn record(&self, bytes: &[u8]) {
        let now = now_ns();
        let found = markers(bytes);
        if found.is_empty() {
            return;
        }
        let mut state = self.lock();
        let mut counted: Vec<u64> = Vec::with_capacity(found.len());
        for (phase, seq, sent) in found {
            // A frame may carry the text twice (the rendered text and its segments).
            if phase != state.phase || counted.contains(&seq) {
                continue;
            }
            counted.push(seq);
            state.last_any_ns = Some(now);
            let Ok(index) = usize::try_from(seq) else {
                continue;
            };
            let Some(seen) = state.seen.get_mut(index) else {
                continue;
            };
            if *seen {
                state.duplicates += 1;
                continue;
            }
            *seen = true;
            state.received += 1;
            state.latencies.push(now.saturating_sub(sent));
            if dump_dir().is_some() {
                state.samples.push((seq, sent, now.saturating_sub(sent)));
            }
            state.last_ns = Some(now);
        }
    }

    /// Distinct messages of the phase received so far.
    pub fn received(&self) -> usize {
        self.lock().received
    }

    /// Which sequence numbers of the phase arrived so far (index = seq).
    pub fn seen(&self) -> Vec<bool> {
        self.lock().seen.clone()
    }

    /// Waits until `target` messages arrived, nothing new arrived for `stall`, or `limit`
    /// passed (a daemon that trickles messages through a reconnect loop); then returns the
    /// outcome.
    pub async fn wait(&self, target: usize, stall: Duration, limit: Duration) -> Outcome {
        let mut last_count = self.received();
        let mut last_progress = Instant::now();
        let deadline = Instant::now() + limit;
        loop {
            let count = self.received();
            if count >= target || Instant::now() >= deadline {
                break;
            }
            if count != last_count {
                last_count = count;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= stall {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.finish()
    }

    /// Waits until no message of the phase (duplicates included) arrived for `quiet`, counted
    /// from the call at the earliest, or `limit` passed; then returns the outcome.
    pub async fn wait_quiet(&self, quiet: Duration, limit: Duration) -> Outcome {
        let called = now_ns();
        let deadline = Instant::now() + limit;
        let quiet_ns = u64::try_from(quiet.as_nanos()).unwrap_or(u64::MAX);
        loop {
            let last = self.lock().last_any_ns.unwrap_or(0).max(called);
            if now_ns().saturating_sub(last) >= quiet_ns || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.finish()
    }

    /// The outcome of the phase so far (and its samples written out with
    /// `QUNBRIDGE_BENCH_DUMP`).
    fn finish(&self) -> Outcome {
        let mut state = self.lock();
        if let Some(dir) = dump_dir() {
            let mut text = String::from("seq,sent_ns,latency_ns\n");
            for (seq, sent, latency) in &state.samples {
                text.push_str(&format!("{seq},{sent},{latency}\n"));
            }
            let path = dir.join(format!("phase-{}.csv", state.phase));
            if let Err(error) =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text))
            {
                eprintln!("cannot write {path:?}: {error}");
            }
        }
        let mut latencies = std::mem::take(&mut state.latencies);
        latencies.sort_unstable();
        Outcome {
            received: state.received,
            duplicates: state.duplicates,
            latencies,
            last_ns: state.last_ns,
        }
    }

    /// The state, recovering from a poisoned lock (a receiver that panicked mid-record leaves
    /// counts that are still usable).
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `p`-quantile (0 < p ≤ 1, nearest rank) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_anywhere_and_bad_ones_skipped() {
        let text = format!(
            "[API] Ann: {} x qb#1#x# {}",
            marker(3, 7, 42),
            marker(3, 8, 43)
        );
        assert_eq!(markers(text.as_bytes()), vec![(3, 7, 42), (3, 8, 43)]);
        assert!(markers(b"qb#").is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.5), Some(500));
        assert_eq!(percentile(&values, 0.99), Some(990));
        assert_eq!(percentile(&values, 0.999), Some(999));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_frame_with_the_text_twice_counts_once() {
        let collector = Collector::default();
        collector.begin(1, 2);
        let m = marker(1, 0, 0);
        collector.record(format!("{{\"text\":\"{m}\",\"segments\":[\"{m}\"]}}").as_bytes());
        collector.record(m.as_bytes());
        let state = collector.lock();
        assert_eq!((state.received, state.duplicates), (1, 1));
    }

    #[tokio::test]
    async fn waiting_for_quiet_counts_duplicates_as_activity() {
        let collector = Collector::default();
        collector.begin(2, 1);
        collector.record(marker(2, 0, 0).as_bytes());
        collector.record(marker(2, 0, 0).as_bytes());
        let outcome = collector
            .wait_quiet(Duration::from_millis(100), Duration::from_secs(5))
            .await;
        assert_eq!((outcome.received, outcome.duplicates), (1, 1));
        assert_eq!(collector.seen(), vec![true]);
    }
}
