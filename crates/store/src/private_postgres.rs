//! A private Postgres cluster run from the machine's own `initdb` and `postgres` binaries:
//! what `kopilka dev` and the tests use when `DATABASE_URL` is unset, so a fresh machine
//! needs nothing but the PostgreSQL server package.
//!
//! The server is a child process on a free loopback port with no Unix socket. It dies with
//! us: the thread that starts it lives until it exits, and the child asks the kernel for a
//! signal when that thread goes (`PR_SET_PDEATHSIG`), so even a SIGKILLed test run leaves no
//! server behind. Throwaway clusters live in the temp folder and are removed on drop, or by
//! the next start when their owner died. The superuser has a random password, kept in the
//! data folder, so other users of the machine cannot use the port. As root, the binaries run as the `postgres` user,
//! because `initdb` refuses root.
#![allow(
    unsafe_code,
    reason = "getpwnam, kill and prctl have no safe std equivalent"
)]

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

/// Why the private cluster could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum PrivatePostgresError {
    /// No `initdb`/`postgres` binaries on this machine.
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found. Install them \
         (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
         macOS: `brew install postgresql@16`), or set KOPILKA_PG_BIN to their folder, \
         or set DATABASE_URL to an existing server"
    )]
    NotInstalled,
    /// Running as root, with no unprivileged user to run Postgres as.
    #[error(
        "running as root and there is no `postgres` user to run the private cluster as (initdb refuses root); create one or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    /// A step failed; `log` is the tail of what Postgres printed.
    #[error("private Postgres: {step} failed: {source}{log}")]
    Step {
        /// What we were doing.
        step: &'static str,
        /// The I/O error.
        source: io::Error,
        /// The tail of the server or initdb output, if any.
        log: String,
    },
}

/// A running (or stopped) private cluster. Dropping it stops the server; a throwaway one
/// also loses its data folder.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    throwaway: bool,
    run_as: Option<(u32, u32)>,
    password: SecretString,
    server: Mutex<Option<Server>>,
}

#[derive(Debug)]
struct Server {
    pid: i32,
    keeper: JoinHandle<io::Result<ExitStatus>>,
}

/// The prefix of throwaway cluster folders in the temp folder: `kopilka-pg-<pid>-<n>`.
const THROWAWAY_PREFIX: &str = "kopilka-pg-";
const LOG_FILE: &str = "kopilka-postgres.log";
/// The superuser's password, inside the data folder (mode 0600).
pub const PASSWORD_FILE: &str = "kopilka.password";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl PrivatePostgres {
    /// Starts a throwaway cluster for tests: a fresh folder under the temp folder, tuned for
    /// speed over durability (no fsync), removed when dropped.
    ///
    /// # Errors
    /// [`PrivatePostgresError`] saying what to install or what failed.
    pub fn start_throwaway() -> Result<Self, PrivatePostgresError> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        sweep_orphans();
        let name = format!(
            "{THROWAWAY_PREFIX}{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        Self::start_at(std::env::temp_dir().join(name), true)
    }

    /// Starts a cluster kept in `data_dir` (created and initialised on first use), so data
    /// survives restarts; what `kopilka dev` runs.
    ///
    /// # Errors
    /// [`PrivatePostgresError`] saying what to install or what failed.
    pub fn start_persistent(data_dir: &Path) -> Result<Self, PrivatePostgresError> {
        let absolute = std::path::absolute(data_dir).map_err(step("resolve the data folder"))?;
        Self::start_at(absolute, false)
    }

    fn start_at(data_dir: PathBuf, throwaway: bool) -> Result<Self, PrivatePostgresError> {
        let bin_dir = find_bin_dir()?;
        let run_as = unprivileged_user()?;
        let mut cluster = Self {
            bin_dir,
            data_dir,
            port: 0,
            throwaway,
            run_as,
            password: SecretString::default(),
            server: Mutex::new(None),
        };
        cluster.init_if_needed()?;
        cluster.password = fs::read_to_string(cluster.data_dir.join(PASSWORD_FILE))
            .map(|p| SecretString::from(p.trim().to_owned()))
            .unwrap_or_default();
        // A port picked free can be taken before Postgres binds it; try a few. A cluster
        // that never starts is dropped, which removes a throwaway folder.
        let mut last_error = None;
        for _ in 0..5 {
            cluster.port = free_port().map_err(step("find a free port"))?;
            match cluster.start() {
                Ok(()) => return Ok(cluster),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or(PrivatePostgresError::NotInstalled))
    }

    /// The loopback port the server listens on (kept across [`Self::stop`]/[`Self::start`]).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding the cluster's data.
    #[must_use]
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The URL of `database` on this server, as the superuser `postgres` with its password.
    #[must_use]
    pub fn url(&self, database: &str) -> SecretString {
        SecretString::from(self.url_with(database, self.password.expose_secret()))
    }

    /// [`Self::url`] with the password masked, for saying where the database is.
    #[must_use]
    pub fn display_url(&self, database: &str) -> String {
        self.url_with(database, "***")
    }

    fn url_with(&self, database: &str, password: &str) -> String {
        if password.is_empty() {
            // A cluster made before passwords were set (trust authentication).
            format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
        } else {
            format!(
                "postgres://postgres:{password}@127.0.0.1:{}/{database}",
                self.port
            )
        }
    }

    /// Starts the server (again) on the same port and waits until it accepts connections.
    /// A no-op when it is running.
    ///
    /// # Errors
    /// [`PrivatePostgresError::Step`] with the tail of the server log.
    pub fn start(&self) -> Result<(), PrivatePostgresError> {
        let mut server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if server.as_ref().is_some_and(|s| !s.keeper.is_finished()) {
            return Ok(());
        }
        let log_path = self.data_dir.join(LOG_FILE);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(step("open the server log"))?;
        let log_start = log.metadata().map_or(0, |m| m.len());
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(step("open the server log"))?)
            .stderr(log)
            // Its own process group: a ctrl-c meant for us must not stop the database
            // before our in-flight requests have finished.
            .process_group(0);
        if self.throwaway {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        let death_signal = if self.throwaway {
            libc::SIGQUIT
        } else {
            libc::SIGINT
        };
        self.prepare(&mut command, death_signal);

        let (started_tx, started_rx) = mpsc::channel();
        let keeper = thread::Builder::new()
            .name("private-postgres".into())
            .spawn(move || {
                // This thread must outlive the child: the death signal fires when it exits.
                match command.spawn() {
                    Ok(mut child) => {
                        let _ = started_tx.send(Ok(child.id()));
                        child.wait()
                    }
                    Err(err) => {
                        let kind = err.kind();
                        let _ = started_tx.send(Err(err));
                        Err(io::Error::from(kind))
                    }
                }
            })
            .map_err(step("start the keeper thread"))?;
        let pid = started_rx
            .recv()
            .map_err(|_| io::Error::other("keeper thread vanished"))
            .and_then(|r| r)
            .map_err(step("start postgres"))?;
        let pid = i32::try_from(pid)
            .map_err(|_| io::Error::other("pid out of range"))
            .map_err(step("start postgres"))?;
        let running = Server { pid, keeper };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if running.keeper.is_finished() {
                let tail = log_tail(&log_path, log_start);
                let _ = running.keeper.join();
                return Err(PrivatePostgresError::Step {
                    step: "start postgres",
                    source: io::Error::other("the server exited"),
                    log: tail,
                });
            }
            if self.is_ready(pid) {
                break;
            }
            if Instant::now() > deadline {
                stop_server(running);
                return Err(PrivatePostgresError::Step {
                    step: "wait for postgres",
                    source: io::Error::from(io::ErrorKind::TimedOut),
                    log: log_tail(&log_path, log_start),
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
        *server = Some(running);
        Ok(())
    }

    /// Stops the server (fast shutdown: sessions are disconnected) and waits for it to exit.
    /// The data folder stays; [`Self::start`] brings it back on the same port.
    pub fn stop(&self) {
        let taken = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(server) = taken {
            stop_server(server);
        }
    }

    /// Initialises the cluster unless `PG_VERSION` shows it exists. initdb writes into a
    /// sibling folder that is renamed into place only when it succeeded, so an interrupted
    /// first start never leaves a half-made cluster that looks finished. The superuser gets
    /// a random password (saved in [`PASSWORD_FILE`], readable only by us), so other local
    /// users cannot use the loopback port.
    fn init_if_needed(&self) -> Result<(), PrivatePostgresError> {
        if self.data_dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        let staging = self.data_dir.with_extension("initdb");
        let _ = fs::remove_dir_all(&staging);
        self.make_private_dir(&staging)?;
        let password = random_password().map_err(step("generate a password"))?;
        let password_file = staging.join(PASSWORD_FILE);
        fs::write(&password_file, &password).map_err(step("write the password file"))?;
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))
            .map_err(step("protect the password file"))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid))
                .map_err(step("give the password file to the postgres user"))?;
        }
        let pgdata = staging.join("pgdata");
        let mut command = Command::new(self.bin_dir.join("initdb"));
        command
            .arg("-D")
            .arg(&pgdata)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .stdin(Stdio::null());
        if self.throwaway {
            command.arg("--no-sync");
        }
        // SIGTERM lets initdb clean up after itself if we die mid-way.
        self.prepare(&mut command, libc::SIGTERM);
        let output = command.output().map_err(step("run initdb"))?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            let _ = fs::remove_dir_all(&staging);
            return Err(PrivatePostgresError::Step {
                step: "initdb",
                source: io::Error::other(output.status.to_string()),
                log: format!(": {}", last_lines(&text, 8)),
            });
        }
        fs::rename(&password_file, pgdata.join(PASSWORD_FILE))
            .map_err(step("keep the password"))?;
        let _ = fs::remove_dir(&self.data_dir);
        fs::rename(&pgdata, &self.data_dir).map_err(step("move the new cluster into place"))?;
        let _ = fs::remove_dir_all(&staging);
        Ok(())
    }

    /// Creates `dir` with mode 0700, owned by the user Postgres runs as.
    fn make_private_dir(&self, dir: &Path) -> Result<(), PrivatePostgresError> {
        fs::create_dir_all(dir).map_err(step("create the data folder"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(step("set the data folder's permissions"))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(step("give the data folder to the postgres user"))?;
        }
        Ok(())
    }

    /// Drops privileges (as root) and ties the child's life to the spawning thread.
    fn prepare(&self, command: &mut Command, death_signal: libc::c_int) {
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
            // Postgres and initdb look at HOME and USER; root's would be wrong.
            command.env("HOME", &self.data_dir).env("USER", "postgres");
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of ours; it runs after
        // the uid switch (std applies uid/gid before pre_exec), which would otherwise clear it.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Postgres writes its pid on the first line of `postmaster.pid` and `ready` on the
    /// eighth once it accepts connections; a file left by an earlier server has another pid.
    fn is_ready(&self, pid: i32) -> bool {
        fs::read_to_string(self.data_dir.join("postmaster.pid")).is_ok_and(|pid_file| {
            let mut lines = pid_file.lines();
            lines
                .next()
                .is_some_and(|first| first.trim() == pid.to_string())
                && lines.nth(6).is_some_and(|status| status.trim() == "ready")
        })
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        if self.throwaway {
            let _ = fs::remove_dir_all(&self.data_dir);
        }
    }
}

fn stop_server(server: Server) {
    if server.keeper.is_finished() {
        // Already exited and reaped: its pid may belong to someone else by now.
        let _ = server.keeper.join();
        return;
    }
    // SAFETY: kill only sends a signal to the process we started, which is still running.
    unsafe { libc::kill(server.pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.keeper.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if !server.keeper.is_finished() {
        // SAFETY: as above; immediate shutdown when fast shutdown hangs.
        unsafe { libc::kill(server.pid, libc::SIGQUIT) };
    }
    let _ = server.keeper.join();
}

fn step(what: &'static str) -> impl Fn(io::Error) -> PrivatePostgresError {
    move |source| PrivatePostgresError::Step {
        step: what,
        source,
        log: String::new(),
    }
}

/// Where the PostgreSQL server programs (`initdb`, `postgres`, and beside them `pg_dump`)
/// are: `KOPILKA_PG_BIN`, the newest Debian-style `/usr/lib/postgresql/<version>/bin`, then
/// `PATH`.
///
/// # Errors
/// [`PrivatePostgresError::NotInstalled`] when none has both `initdb` and `postgres`.
pub fn find_bin_dir() -> Result<PathBuf, PrivatePostgresError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("KOPILKA_PG_BIN").map(PathBuf::from) {
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(PrivatePostgresError::NotInstalled)
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| has_both(dir))
        .ok_or(PrivatePostgresError::NotInstalled)
}

/// As root, the uid and gid of `postgres`; otherwise `None` (run as ourselves).
fn unprivileged_user() -> Result<Option<(u32, u32)>, PrivatePostgresError> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: getpwnam reads the user database; the result is copied out at once and the
    // name is a valid C string. Called rarely, so its static buffer is not shared in practice.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if entry.is_null() {
        return Err(PrivatePostgresError::NoUnprivilegedUser);
    }
    // SAFETY: non-null pointer returned by getpwnam.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

/// 32 hex characters from the kernel's random source.
fn random_password() -> io::Result<String> {
    let mut bytes = [0_u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Removes throwaway clusters whose owning process is gone (a killed test run).
fn sweep_orphans() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(THROWAWAY_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(owner, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(from));
        let _ = file.read_to_string(&mut text);
    }
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", last_lines(&text, 8))
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
