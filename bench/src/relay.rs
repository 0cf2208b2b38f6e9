//! The trivial baseline relay: `bench/baseline_relay.py`, one Python process with aiohttp and
//! the same `api` surface as qunbridge (POST in, WebSocket out, no broker, no store), measured
//! by the same client as the `api` → `api` scenario so that its throughput and CPU per
//! message are also given as ratios to it.
//!
//! The interpreter is the system's `python3` when it can `import aiohttp`; otherwise a virtual
//! environment is made under `target/bench-venv` and aiohttp installed there with pip. When
//! neither works the relay is reported unavailable and the run goes on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::collector::Collector;
use crate::daemon::cpu_ticks;
use crate::drivers::{open_ws, post_messages, Pace};
use crate::figures::{Latency, Throughput};
use crate::scenarios::{free_addr, latency, next_phase, throughput, Settings, LIMIT, STALL};

/// The relay's source, next to this crate's manifest.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/baseline_relay.py");
/// How long the relay may take to listen.
const START_WAIT: Duration = Duration::from_secs(30);
/// The rate of its latency phase, messages per second.
pub const RELAY_LATENCY_RATE: f64 = 1000.0;

/// What was measured of the baseline relay.
#[derive(Debug, Clone, Default)]
pub struct RelayReport {
    /// The interpreter used.
    pub python: String,
    /// At saturation: the same messages and connections as the `api` saturation phase; CPU is
    /// the Python process's.
    pub throughput: Option<Throughput>,
    /// Latency at [`RELAY_LATENCY_RATE`].
    pub latency: Option<Latency>,
    /// Why it could not be measured.
    pub unavailable: Option<String>,
}

impl RelayReport {
    /// Its saturation rate, when measured.
    pub fn rate(&self) -> Option<f64> {
        self.throughput
            .as_ref()
            .map(|t| t.rate)
            .filter(|&r| r > 0.0)
    }

    /// Its CPU per message, µs, when measured.
    pub fn cpu_us(&self) -> Option<f64> {
        self.throughput
            .as_ref()
            .and_then(|t| t.cpu_us_per_message)
            .filter(|&us| us > 0.0)
    }
}

/// Measures the relay; never fails: what went wrong is in [`RelayReport::unavailable`].
pub async fn relay_scenario(settings: &Settings) -> RelayReport {
    let python = match python_with_aiohttp(&settings.venv).await {
        Ok(python) => python,
        Err(error) => {
            eprintln!("baseline relay unavailable: {error}");
            return RelayReport {
                unavailable: Some(error),
                ..RelayReport::default()
            };
        }
    };
    let mut report = RelayReport {
        python: python.display().to_string(),
        ..RelayReport::default()
    };
    if let Err(error) = measure(&python, settings, &mut report).await {
        eprintln!("baseline relay unavailable: {error}");
        report.unavailable = Some(error);
    }
    report
}

/// Starts the relay and runs its phases.
async fn measure(
    python: &Path,
    settings: &Settings,
    report: &mut RelayReport,
) -> Result<(), String> {
    let relay = Relay::start(python).await?;
    let collector = Arc::new(Collector::default());
    let ws = open_ws(relay.addr, collector.clone()).await?;
    let probe = next_phase();
    collector.begin(probe, 1);
    let sent = post_messages(relay.addr, "a", probe, 1, 1, Pace::Saturate).await;
    if collector.wait(1, STALL, STALL).await.received != 1 {
        return Err(format!(
            "a probe message posted to the baseline relay did not come back ({})",
            sent.first_error.as_deref().unwrap_or("accepted")
        ));
    }

    let phase = next_phase();
    collector.begin(phase, settings.messages);
    let before = relay.cpu_ticks()?;
    let sent = post_messages(
        relay.addr,
        "a",
        phase,
        settings.messages,
        settings.connections,
        Pace::Saturate,
    )
    .await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    let ticks = relay.cpu_ticks()?.saturating_sub(before);
    report.throughput = Some(throughput(&sent, &outcome, Some(ticks)));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let phase = next_phase();
    let count = (RELAY_LATENCY_RATE * settings.latency_secs) as usize;
    collector.begin(phase, count);
    let sent = post_messages(
        relay.addr,
        "a",
        phase,
        count,
        settings.connections,
        Pace::Rate(RELAY_LATENCY_RATE),
    )
    .await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    report.latency = Some(latency(RELAY_LATENCY_RATE, &sent, &outcome));
    ws.abort();
    relay.stop().await;
    Ok(())
}

/// A Python interpreter that can `import aiohttp`: the system's `python3` (resolved to the
/// real executable, so the process measured is the interpreter and not a launcher), else the
/// one of a virtual environment at `venv`, made and given aiohttp when needed.
async fn python_with_aiohttp(venv: &Path) -> Result<PathBuf, String> {
    let system = real_python("python3")
        .await
        .ok_or("no python3 on PATH".to_string())?;
    if imports_aiohttp(&system).await {
        return Ok(system);
    }
    let venv_python = venv.join("bin").join("python");
    if !imports_aiohttp(&venv_python).await {
        eprintln!(
            "python3 has no aiohttp: making {} and installing aiohttp there",
            venv.display()
        );
        if !venv_python.exists() {
            run(Command::new(&system).arg("-m").arg("venv").arg(venv)).await?;
        }
        run(Command::new(&venv_python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "aiohttp",
        ]))
        .await?;
        if !imports_aiohttp(&venv_python).await {
            return Err(format!(
                "{} still cannot import aiohttp",
                venv_python.display()
            ));
        }
    }
    Ok(real_python(&venv_python.to_string_lossy())
        .await
        .unwrap_or(venv_python))
}

/// `sys.executable` of `program`, when it runs.
async fn real_python(program: &str) -> Option<PathBuf> {
    let output = Command::new(program)
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let path = String::from_utf8(output.stdout).ok()?;
    let path = path.trim();
    (output.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Whether `python` can import aiohttp.
async fn imports_aiohttp(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import aiohttp"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Runs a setup command; its output goes to this program's stderr.
async fn run(command: &mut Command) -> Result<(), String> {
    let described = format!("{:?}", command.as_std());
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|e| format!("cannot run {described}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{described} failed ({status})"))
    }
}

/// The running relay; killed when dropped.
struct Relay {
    /// The process.
    child: Child,
    /// Its process id.
    pid: u32,
    /// Where it listens.
    addr: SocketAddr,
    /// Its stderr, kept (and removed) with it.
    _log: tempfile::NamedTempFile,
}

impl Relay {
    /// Starts `python baseline_relay.py` on a free port and waits until it accepts connections.
    async fn start(python: &Path) -> Result<Relay, String> {
        let addr = free_addr();
        let log = tempfile::NamedTempFile::new()
            .map_err(|e| format!("cannot make a temporary file: {e}"))?;
        let stderr = log
            .reopen()
            .map_err(|e| format!("cannot open {:?}: {e}", log.path()))?;
        let mut child = Command::new(python)
            .arg("-u")
            .arg(SCRIPT)
            .arg("--host")
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {} {SCRIPT}: {e}", python.display()))?;
        let pid = child.id().ok_or("the baseline relay exited at once")?;
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            let log_text = || std::fs::read_to_string(log.path()).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the baseline relay exited ({status}): {}",
                    log_text()
                ));
            }
            if started.elapsed() > START_WAIT {
                return Err(format!(
                    "the baseline relay did not listen within {START_WAIT:?}: {}",
                    log_text()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("  baseline relay ready on {addr}, pid {pid}");
        Ok(Relay {
            child,
            pid,
            addr,
            _log: log,
        })
    }

    /// Its CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.pid)
    }

    /// Kills it and waits for it.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_where_the_bench_looks_for_it() {
        assert!(Path::new(SCRIPT).exists(), "{SCRIPT}");
    }
}
