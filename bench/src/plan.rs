//! The plan of one benchmark run on one broker kind: which scenarios run, in which order, and
//! how a failing one is reported without stopping the others.

use std::time::Instant;

use crate::scenarios::{
    api_scenario, backlog_scenario, idle_scenario, onebot_scenario, scale_scenario, BrokerKind,
    BrokerReport, Settings,
};
use crate::stress;

/// Runs every scenario on one broker kind.
pub async fn run_all(kind: BrokerKind, settings: &Settings) -> BrokerReport {
    let mut report = BrokerReport::new(kind);
    let steps: [(&str, &str, Step); 9] = [
        ("api", "api accounts", Step::Api),
        ("onebot", "OneBot accounts", Step::OneBot),
        ("backlog", "backlog", Step::Backlog),
        ("overload", "overload", Step::Overload),
        ("slow", "slow destination", Step::Slow),
        ("scale", "100 accounts", Step::Scale),
        ("idle", "idle CPU", Step::Idle),
        ("soak", "soak", Step::Soak),
        ("moderation", "moderation cost", Step::Moderation),
    ];
    for (key, name, step) in steps {
        // The moderation cost runs six more saturation phases: only when asked for.
        let asked = settings.only.iter().any(|o| o == key);
        if !settings.runs(key) || (matches!(step, Step::Moderation) && !asked) {
            continue;
        }
        eprintln!("[{}] {name} …", kind.label());
        let started = Instant::now();
        let outcome = match step {
            Step::Api => {
                report.relay = Some(crate::relay::relay_scenario(settings).await);
                api_scenario(kind, settings, &mut report).await
            }
            Step::OneBot => onebot_scenario(kind, settings, &mut report).await,
            Step::Backlog => backlog_scenario(kind, settings, &mut report).await,
            Step::Scale => scale_scenario(kind, settings, &mut report).await,
            Step::Idle => idle_scenario(kind, settings, &mut report).await,
            Step::Overload => stress::overload_scenario(kind, settings, &mut report).await,
            Step::Slow => stress::slow_scenario(kind, settings, &mut report).await,
            Step::Soak => stress::soak_scenario(kind, settings, &mut report).await,
            Step::Moderation => crate::moderation::cost_scenario(kind, settings, &mut report).await,
        };
        if let Err(error) = outcome {
            eprintln!("[{}] {name} failed: {error}", kind.label());
            report.errors.push(format!("{name}: {error}"));
        }
        eprintln!(
            "[{}] {name} done in {:.0} s",
            kind.label(),
            started.elapsed().as_secs_f64()
        );
    }
    report
}

/// The scenarios.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Baseline and two `api` accounts.
    Api,
    /// Two OneBot accounts.
    OneBot,
    /// A backlog handed to the core at once.
    Backlog,
    /// Many accounts and groups.
    Scale,
    /// Idle accounts.
    Idle,
    /// Far more POSTs than the daemon can take.
    Overload,
    /// A paced destination group next to an unpaced one.
    Slow,
    /// A long run at a steady rate.
    Soak,
    /// Saturation without and with moderation, in pairs.
    Moderation,
}
