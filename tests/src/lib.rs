//! Helpers for black-box tests of the `kopilka` binary: find (and build) it, run it with a
//! clean environment, read what it prints, signal it.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The `kopilka` binary of this build profile, built once per test process so the tests
/// never run a stale one.
///
/// # Panics
/// When it cannot be built.
#[must_use]
pub fn kopilka_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This test runs from <target>/<profile>/deps/<test>; the binary is <target>/<profile>/kopilka.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a target profile folder");
        let target_dir = profile_dir.parent().expect("a target folder");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "--package",
                "kopilka-cli",
                "--bin",
                "kopilka",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Cargo gives this test its package's CARGO_PKG_* and friends; passed on, they would
        // look like a changed environment and rebuild the binary on every run.
        for (key, _) in std::env::vars_os() {
            let per_crate = key.to_str().is_some_and(|k| {
                [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_",
                ]
                .iter()
                .any(|prefix| k.starts_with(prefix))
            });
            if per_crate {
                build.env_remove(&key);
            }
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the kopilka binary failed");
        let binary = profile_dir.join("kopilka");
        assert!(binary.is_file(), "no binary at {}", binary.display());
        binary
    })
}

/// The repository's `config/` folder.
#[must_use]
pub fn config_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"))
}

/// `kopilka <args>` with no inherited Kopilka settings: `KOPILKA_*` and `DATABASE_URL`
/// are cleared, the config folder is the repository's, and logs are JSON.
#[must_use]
pub fn kopilka(args: &[&str]) -> Command {
    let mut command = Command::new(kopilka_binary());
    command.args(args);
    for (key, _) in std::env::vars_os() {
        let inherited = key
            .to_str()
            .is_some_and(|k| k.starts_with("KOPILKA") || k == "DATABASE_URL" || k == "RUST_LOG");
        if inherited {
            command.env_remove(&key);
        }
    }
    command
        .env("KOPILKA_CONFIG_DIR", config_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `command` to completion (within a minute).
///
/// # Panics
/// When it cannot start or does not finish in time.
pub async fn run(mut command: Command) -> Output {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command finishes within a minute")
        .expect("the command starts");
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `command` to completion (within a minute) with `input` on its standard input.
///
/// # Panics
/// When it cannot start or does not finish in time.
pub async fn run_with_stdin(mut command: Command, input: &str) -> Output {
    use tokio::io::AsyncWriteExt as _;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the command starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("stdin takes the input");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command finishes within a minute")
        .expect("the command runs");
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A long-running `kopilka` process (serve, dev).
pub struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts `command` with stdout piped and stderr to a log file the test can show.
    ///
    /// # Panics
    /// When it cannot start.
    #[must_use]
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kopilka starts");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut log_lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let log = Arc::clone(&stderr);
        tokio::spawn(async move {
            while let Ok(Some(line)) = log_lines.next_line().await {
                let mut log = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// What the process logged on stderr so far.
    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The next line on stdout, within `timeout`.
    ///
    /// # Panics
    /// When the process closes stdout or says nothing in time.
    pub async fn next_line(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("no line on stdout ({other:?}); stderr:\n{}", self.stderr()),
        }
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits for it.
    ///
    /// # Panics
    /// When it cannot be killed.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL is delivered");
    }

    /// Sends SIGTERM and waits for the exit.
    ///
    /// # Panics
    /// When it does not exit in time.
    pub async fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().expect("a running process");
        let pid = libc::pid_t::try_from(pid).expect("a pid");
        #[allow(unsafe_code, reason = "sending SIGTERM to our own child")]
        // SAFETY: kill only sends a signal to the child we started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("exits in time after SIGTERM")
            .expect("an exit status")
    }
}

/// A free loopback port (for a server the test starts).
///
/// # Panics
/// When none is free.
#[must_use]
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}
