//! The daemon as a separate process (`qunbridge run`), for what only a process can show: a
//! `kill -9` in the middle of a stream and a restart on the same state directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, qunbridge_binary, PATIENCE};

/// A `qunbridge run` process; killed when dropped.
pub struct DaemonProcess {
    /// The process, while it runs.
    child: Option<Child>,
    /// Its config file (the state directory is next to it).
    config: PathBuf,
    /// Its admin endpoint.
    pub admin: SocketAddr,
    /// Extra arguments of `qunbridge run`.
    args: Vec<String>,
    /// The `[admin]` table written into the config.
    admin_table: String,
}

impl DaemonProcess {
    /// Writes `config` (with `state_dir` and `[admin]` filled in) into `dir`, starts the
    /// daemon and waits until `/readyz` says ready.
    pub async fn start(dir: &std::path::Path, config: &str) -> DaemonProcess {
        DaemonProcess::start_with(dir, config, &[]).await
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its resident memory in bytes (`VmRSS` of `/proc/<pid>/status`), while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// [`DaemonProcess::start`] with extra arguments of `qunbridge run` (`--role core`, …).
    pub async fn start_with(dir: &std::path::Path, config: &str, args: &[&str]) -> DaemonProcess {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let table = format!("[admin]\nlisten = \"{admin}\"\n");
        DaemonProcess::start_on(dir, config, args, admin, table).await
    }

    /// [`DaemonProcess::start`] with the admin endpoint on every address (`0.0.0.0`, not
    /// loopback) and `admin.token` = `token`; [`DaemonProcess::admin`] is its loopback
    /// address, where tests reach it.
    pub async fn start_guarded(dir: &std::path::Path, config: &str, token: &str) -> DaemonProcess {
        let port = free_port();
        let admin = SocketAddr::from(([127, 0, 0, 1], port));
        let table = format!("[admin]\nlisten = \"0.0.0.0:{port}\"\ntoken = \"{token}\"\n");
        DaemonProcess::start_on(dir, config, &[], admin, table).await
    }

    /// Writes the config with `admin_table`, starts the daemon and waits until it is ready.
    async fn start_on(
        dir: &std::path::Path,
        config: &str,
        args: &[&str],
        admin: SocketAddr,
        admin_table: String,
    ) -> DaemonProcess {
        let mut process = DaemonProcess {
            child: None,
            config: dir.join("qunbridge.toml"),
            admin,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            admin_table,
        };
        process.write_config(config);
        process.spawn().await;
        process
    }

    /// Starts the process on the config file and waits until it is ready.
    async fn spawn(&mut self) {
        let log = std::env::var("QUNBRIDGE_TEST_LOG").ok();
        let child = Command::new(qunbridge_binary())
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .args(&self.args)
            .env("QUNBRIDGE_LOG", log.as_deref().unwrap_or("warn"))
            .stdout(Stdio::null())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("daemon starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ready = reqwest::get(format!("http://{}/readyz", self.admin)).await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "daemon not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: no shutdown, no flushing, nothing but what is already on disk and with the
    /// broker.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon (`kill -9` if it still runs) and starts it again on the same state
    /// directory and admin address with a new `config`.
    pub async fn restart_with(&mut self, config: &str) {
        self.kill();
        self.write_config(config);
        self.spawn().await;
    }

    /// Writes a new `config` (same state directory and admin address), sends SIGHUP as an
    /// operator would, and waits until `qunbridge_config_reloads_total{outcome="ok"}` went up.
    pub async fn reload_with(&mut self, config: &str) {
        const OK: &str = "qunbridge_config_reloads_total{outcome=\"ok\"}";
        let before = crate::metrics::counter(&self.metrics().await, OK);
        self.write_config(config);
        let pid = self.pid().expect("the daemon runs");
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -HUP failed");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while crate::metrics::counter(&self.metrics().await, OK) <= before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reload was not applied"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `config` with the state directory and admin address filled in.
    fn write_config(&self, config: &str) {
        let dir = self
            .config
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        std::fs::write(
            &self.config,
            format!(
                "state_dir = {:?}\n{config}\n{}",
                dir.join("state"),
                self.admin_table
            ),
        )
        .expect("write config");
    }

    /// Starts the daemon again on the same config and state directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// The admin endpoint's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Stops the daemon as systemd would (SIGTERM) and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process (a `qunbridge` run by a test) that is killed and reaped when dropped, so a
/// failing test leaves no daemon behind holding its ports.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Its process id, for sending it signals.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends it a signal by name (`HUP`, `TERM`) with `kill`, as an operator or systemd would.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name} failed");
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
