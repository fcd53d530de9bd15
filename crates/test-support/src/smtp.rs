//! A real SMTP server for tests: aiosmtpd (PyPI) on a loopback port, run by
//! `smtp_sink.py` from a virtualenv, keeping what it accepts in a Maildir the test reads.
//! Faults on demand: answer 421 to everything (transient), 550 for chosen addresses
//! (permanent), or stop and start again on the same port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::ReceivedEmail;

const AIOSMTPD: &str = "aiosmtpd==1.4.6";

/// The Python with aiosmtpd: `KOPILKA_AIOSMTPD_PYTHON` (the test script installs it), else a
/// virtualenv made here on first use, beside the build output.
fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_or_install_python).clone()
}

fn find_or_install_python() -> PathBuf {
    if let Some(given) = std::env::var_os("KOPILKA_AIOSMTPD_PYTHON").map(PathBuf::from) {
        assert!(
            given.is_file(),
            "KOPILKA_AIOSMTPD_PYTHON={} is not a file",
            given.display()
        );
        return given;
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let target = exe
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let venv = target.join("aiosmtpd-venv");
    let python = venv.join("bin/python");
    if python.is_file() && venv.join("ready").is_file() {
        return python;
    }
    // Built aside and moved into place, so parallel test binaries never see half a venv.
    let building = target.join(format!("aiosmtpd-venv.{}", uuid::Uuid::new_v4().simple()));
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&building)
        .status();
    assert!(
        made.is_ok_and(|s| s.success()),
        "python3 -m venv failed: install python3 with venv"
    );
    let pip = std::process::Command::new(building.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            AIOSMTPD,
        ])
        .status();
    assert!(
        pip.is_ok_and(|s| s.success()),
        "pip install {AIOSMTPD} failed"
    );
    std::fs::write(building.join("ready"), "").expect("marks the venv ready");
    if std::fs::rename(&building, &venv).is_err() {
        // Another binary finished first; theirs is as good.
        let _ = std::fs::remove_dir_all(&building);
    }
    python
}

/// A running SMTP sink.
pub struct SmtpSink {
    port: u16,
    folder: tempfile::TempDir,
    child: Option<Child>,
}

impl SmtpSink {
    /// Starts one on a free loopback port.
    ///
    /// # Panics
    /// When it cannot start.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut sink = Self {
            port,
            folder: tempfile::tempdir().expect("a folder for the mail"),
            child: None,
        };
        sink.resume().await;
        sink
    }

    /// `smtp://127.0.0.1:PORT` (plain, loopback).
    #[must_use]
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn files(&self) -> Vec<PathBuf> {
        ["new", "cur"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(self.folder.path().join("maildir").join(sub)))
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// How many messages it has accepted so far.
    #[must_use]
    pub fn count(&self) -> usize {
        self.files().len()
    }

    /// Every message accepted so far, oldest first.
    #[must_use]
    pub fn messages(&self) -> Vec<ReceivedEmail> {
        self.raw_messages()
            .iter()
            .map(|raw| ReceivedEmail::parse(raw))
            .collect()
    }

    /// Every message accepted so far, oldest first, as received.
    #[must_use]
    pub fn raw_messages(&self) -> Vec<String> {
        let mut files = self.files();
        // Maildir names do not sort by time within a second (unpadded microseconds).
        files.sort_by_key(|p| {
            (
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                p.clone(),
            )
        });
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// From now on, answer every recipient with 421 (`true`), or accept again (`false`).
    ///
    /// # Panics
    /// When the control file cannot be written.
    pub fn fail_transiently(&self, on: bool) {
        let flag = self.folder.path().join("fail-421");
        if on {
            std::fs::write(flag, "").expect("writes the flag");
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// From now on, answer 550 for `address`.
    ///
    /// # Panics
    /// When the control file cannot be written.
    pub fn reject(&self, address: &str) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.folder.path().join("reject"))
            .expect("opens the reject list");
        writeln!(file, "{address}").expect("writes the reject list");
    }

    /// Stops the server (connections are refused until [`Self::resume`]).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port.
    ///
    /// # Panics
    /// When it does not come up.
    pub async fn resume(&mut self) {
        let mut child = Command::new(python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/smtp_sink.py"))
            .arg(self.port.to_string())
            .arg(self.folder.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the SMTP sink starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
            "the SMTP sink did not start: {ready:?}"
        );
        self.child = Some(child);
    }
}
