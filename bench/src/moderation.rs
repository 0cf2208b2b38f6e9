//! `--moderation on`: the moderation a busy operator would run, appended to every daemon's
//! config, to measure what judging costs end to end (issue 17): a flood limit no benchmark
//! sender reaches (so every message is counted, none is kept), spam waves on with their
//! defaults, and a word list of 10 000 words plus 50 regexes masked at every `api` and QQ
//! destination (the benchmark's texts hit none of them, so every message is searched in full).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::drivers::{post_messages, Pace};
use crate::figures::{Costs, Throughput};
use crate::scenarios::{
    api_config, broker_toml, free_addr, mosquitto_for, next_phase, open_checked_ws, throughput,
    BrokerKind, BrokerReport, Settings, LIMIT, STALL,
};

/// Pairs of saturation runs (one without moderation, one with) the cost scenario makes.
pub const PAIRS: usize = 3;

/// `--only moderation`: what judging costs, measured in one run: [`PAIRS`] pairs of
/// `api` → `api` saturation runs, each on a fresh daemon, without and with [`config`], the
/// order alternating from pair to pair so that a drift of the host falls on both alike.
#[derive(Debug, Clone, Default)]
pub struct ModerationCost {
    /// The runs without moderation.
    pub off: Vec<Throughput>,
    /// The runs with moderation.
    pub on: Vec<Throughput>,
}

impl ModerationCost {
    /// The median of a figure over runs.
    fn median(runs: &[Throughput], figure: impl Fn(&Throughput) -> Option<f64>) -> Option<f64> {
        let mut values: Vec<f64> = runs.iter().filter_map(figure).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(values[values.len() / 2])
    }

    /// Median daemon CPU per message, µs: (off, on).
    pub fn cpu(&self) -> (Option<f64>, Option<f64>) {
        let cpu = |t: &Throughput| t.cpu_us_per_message;
        (Self::median(&self.off, cpu), Self::median(&self.on, cpu))
    }

    /// Median messages per second: (off, on).
    pub fn rate(&self) -> (Option<f64>, Option<f64>) {
        let rate = |t: &Throughput| Some(t.rate);
        (Self::median(&self.off, rate), Self::median(&self.on, rate))
    }
}

/// Runs the cost scenario on one broker kind.
///
/// # Errors
/// A message when a daemon does not start or a run loses messages.
pub async fn cost_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let moderation = config()?;
    let mosquitto = mosquitto_for(kind).await;
    let mut cost = ModerationCost::default();
    for pair in 0..PAIRS {
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            let broker = broker_toml(kind, mosquitto.as_ref());
            let (input, output) = (free_addr(), free_addr());
            let mut text = api_config(&broker, input, output);
            if on {
                text.push('\n');
                text.push_str(&moderation);
            }
            let label = format!(
                "{}-moderation-{}-{pair}",
                kind.slug(),
                if on { "on" } else { "off" }
            );
            let daemon = Daemon::start(&settings.binary, &text, &label).await?;
            let measured = saturate(&daemon, input, output, settings).await;
            daemon.stop().await?;
            let measured = measured?;
            eprintln!(
                "[{}] moderation {}: {:.0} msg/s, {} µs/msg",
                kind.label(),
                if on { "on " } else { "off" },
                measured.rate,
                measured
                    .cpu_us_per_message
                    .map_or("?".into(), |us| format!("{us:.0}"))
            );
            if on {
                cost.on.push(measured);
            } else {
                cost.off.push(measured);
            }
        }
    }
    report.moderation_cost = Some(cost);
    Ok(())
}

/// One saturation run of `messages` POSTs to `in:a` of a started `api` → `api` daemon,
/// read from `out`'s WebSocket.
async fn saturate(
    daemon: &Daemon,
    input: std::net::SocketAddr,
    output: std::net::SocketAddr,
    settings: &Settings,
) -> Result<Throughput, String> {
    let messages = settings.messages;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (collector, ws) = open_checked_ws(input, output).await?;
    let phase = next_phase();
    collector.begin(phase, messages);
    let costs = Costs::start(daemon).await;
    let before = daemon.cpu_ticks()?;
    let sent = post_messages(
        input,
        "a",
        phase,
        messages,
        settings.connections,
        Pace::Saturate,
    )
    .await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    let ticks = daemon.cpu_ticks()?.saturating_sub(before);
    let mut result = throughput(&sent, &outcome, Some(ticks));
    costs.finish(daemon, &mut result).await;
    ws.abort();
    if result.received < sent.accepted {
        return Err(format!(
            "{} of {} accepted messages did not arrive",
            sent.accepted - result.received,
            sent.accepted
        ));
    }
    Ok(result)
}

/// Words in the generated list.
const WORDS: usize = 10_000;
/// Regexes in the generated list.
const PATTERNS: usize = 50;

/// Writes the word list next to the other temporary files and returns the config text.
///
/// # Errors
/// A message when the list cannot be written.
pub fn config() -> Result<String, String> {
    let path =
        std::env::temp_dir().join(format!("qunbridge-bench-words-{}.txt", std::process::id()));
    std::fs::write(&path, word_list()).map_err(|e| format!("cannot write {path:?}: {e}"))?;
    Ok(config_for(&path))
}

/// The `[moderation]` tables and filters for a list file at `path`.
fn config_for(path: &PathBuf) -> String {
    format!(
        "[moderation.flood]\nper_sender = \"1000000/1s\"\nburst = 1000000\n\n\
         [moderation.wave]\n\n\
         [moderation.lists.bench]\nfiles = [{path:?}]\n\n\
         [filters.api]\nrules = [{{ match = \"words\", list = \"bench\", action = \"mask\" }}]\n\n\
         [filters.qq]\nrules = [{{ match = \"words\", list = \"bench\", action = \"mask\" }}, \
         {{ match = \"url\", action = \"defang\" }}]\n"
    )
}

/// 10 000 two-to-four-character CJK words (deterministic, none of them in the benchmark's
/// ASCII texts) and 50 regexes of the contact-diversion kind.
fn word_list() -> String {
    let mut text = String::from("# generated by qunbridge-bench --moderation on\n");
    let mut state: u32 = 0x2545_f491;
    for _ in 0..WORDS {
        let length = 2 + (next(&mut state) % 3) as usize;
        for _ in 0..length {
            let code = 0x4e00 + next(&mut state) % 0x51a0;
            text.push(char::from_u32(code).unwrap_or('字'));
        }
        text.push('\n');
    }
    for n in 0..PATTERNS {
        let _ = writeln!(
            text,
            "re:(加|\\+)[vV微]{n}\\s*[:：]?\\s*[a-zA-Z0-9_-]{{6,20}}"
        );
    }
    text
}

/// A xorshift step: the list is the same in every run.
fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_every_word_and_pattern() {
        let list = word_list();
        assert_eq!(
            list.lines().filter(|l| !l.starts_with('#')).count(),
            WORDS + PATTERNS
        );
        assert_eq!(
            list.lines().filter(|l| l.starts_with("re:")).count(),
            PATTERNS
        );
    }
}
