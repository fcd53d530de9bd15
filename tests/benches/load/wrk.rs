//! `wrk` (Debian's package; `scripts/bench` installs it), driven by Lua scripts written
//! here. Every script ends with the same `done()`, which prints one JSON line the harness
//! reads: requests, duration, latency percentiles, errors.

use std::path::PathBuf;
use std::time::Duration;

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Completed requests.
    pub requests: u64,
    /// Requests per second over the run.
    pub rps: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
    /// Answers ≥ 400, and socket errors and timeouts.
    pub failed: u64,
}

const DONE: &str = r#"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"p99_us":%d,"status":%d,"socket":%d}\n',
    summary.requests, summary.duration, latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

/// A plain GET.
pub const GET: &str = "wrk.method = 'GET'\n";

/// GETs carrying the bearer tokens of the file given as the first argument, in rotation
/// (each thread starting at its own place).
pub const BEARER_TOKENS: &str = r#"
local requests = {}
local next_one = 0
function init(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format('GET', nil, {['Authorization'] = 'Bearer ' .. line}, nil)
  end
  next_one = math.random(#requests)
end
function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
"#;

/// POSTs of the signed webhooks in the file given as the first argument (one per line:
/// `signature<TAB>body`), each sent once, split between the threads (the second argument
/// says how many). A thread that has sent its share stops.
pub const WEBHOOKS: &str = r#"
local counter = 0
function setup(thread)
  thread:set('thread_index', counter)
  counter = counter + 1
end
local requests = {}
local next_one = 0
function init(args)
  local threads = tonumber(args[2])
  local n = 0
  for line in io.lines(args[1]) do
    if n % threads == thread_index then
      local tab = line:find('\t', 1, true)
      requests[#requests + 1] = wrk.format('POST', nil, {
        ['Content-Type'] = 'application/json',
        ['Stripe-Signature'] = line:sub(1, tab - 1),
      }, line:sub(tab + 1))
    end
    n = n + 1
  end
end
function request()
  next_one = next_one + 1
  if next_one > #requests then
    wrk.thread:stop()
    return wrk.format('GET', '/healthz')
  end
  return requests[next_one]
end
"#;

/// POSTs of one JSON body (the first argument).
pub const POST_JSON: &str = r#"
function init(args)
  wrk.method = 'POST'
  wrk.body = args[1]
  wrk.headers['Content-Type'] = 'application/json'
end
"#;

/// How wrk is run.
pub struct Load<'a> {
    pub url: String,
    pub script: &'a str,
    pub args: Vec<String>,
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
}

/// The folder the scripts are written to.
fn scripts_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kopilka-bench-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder for wrk's scripts");
    dir
}

fn script_file(script: &str) -> PathBuf {
    use std::hash::{DefaultHasher, Hash as _, Hasher as _};
    let mut hasher = DefaultHasher::new();
    script.hash(&mut hasher);
    let path = scripts_dir().join(format!("{:016x}.lua", hasher.finish()));
    std::fs::write(&path, format!("{script}\n{DONE}")).expect("the script is written");
    path
}

/// Starts wrk; `finish` reads its figures.
pub fn start(load: &Load<'_>) -> tokio::process::Child {
    let script = script_file(load.script);
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .args(["--timeout", "30s", "-s"])
        .arg(&script)
        .arg(&load.url)
        .arg("--")
        .args(&load.args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
        .spawn()
        .expect("wrk runs (scripts/bench installs it)")
}

/// Waits for wrk and reads its figures.
pub async fn finish(child: tokio::process::Child) -> Run {
    let output = child.wait_with_output().await.expect("wrk finishes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no figures: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let figures: serde_json::Value = serde_json::from_str(line).expect("wrk's JSON line");
    let number = |key: &str| figures[key].as_u64().unwrap_or(0);
    let secs = number("duration_us") as f64 / 1e6;
    Run {
        requests: number("requests"),
        rps: number("requests") as f64 / secs.max(1e-9),
        p99_ms: number("p99_us") as f64 / 1e3,
        failed: number("status") + number("socket"),
    }
}

/// Runs `load` to its end.
pub async fn run(load: &Load<'_>) -> Run {
    finish(start(load)).await
}

/// Asks a running wrk to stop now and report (it handles SIGINT by ending the run).
pub fn interrupt(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
}

/// A file holding `lines`, for a script's argument.
pub fn data_file(name: &str, lines: impl IntoIterator<Item = String>) -> PathBuf {
    let path = scripts_dir().join(name);
    let mut text = String::new();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&path, text).expect("the data file is written");
    path
}

/// Removes the scripts and data files.
pub fn clean_up() {
    let _ = std::fs::remove_dir_all(scripts_dir());
}
