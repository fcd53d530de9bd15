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
    /// Answers ≥ 500, counted only by scripts that list their threads in `counted_threads`
    /// and count `server_errors` in `response` ([`PACED`]); 0 otherwise.
    pub server_errors: u64,
}

const DONE: &str = r#"
function done(summary, latency, requests)
  local e = summary.errors
  local server_errors = 0
  if counted_threads ~= nil then
    for _, thread in ipairs(counted_threads) do
      server_errors = server_errors + (thread:get('server_errors') or 0)
    end
  end
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"p99_us":%d,"status":%d,"socket":%d,"server_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, server_errors))
end
"#;

/// A plain GET.
pub const GET: &str = "wrk.method = 'GET'\n";

/// GETs carrying one header whose values are the lines of a file, in rotation (each thread
/// starting at its own place): arguments the file, the header's name and a prefix for each
/// value, e.g. `tokens.txt Authorization "Bearer "` or `visitors.txt Cookie ""`.
pub const HEADER_FROM_FILE: &str = r#"
local requests = {}
local next_one = 0
function init(args)
  local prefix = args[3] or ''
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format('GET', nil, {[args[2]] = prefix .. line}, nil)
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

/// A well-behaved client: GETs, each connection pausing the first argument's milliseconds
/// between its requests (so it asks at a steady pace instead of as fast as it can), with the
/// bearer token of the file named by the second argument, if any; counts answers ≥ 500.
pub const PACED: &str = r#"
counted_threads = {}
function setup(thread)
  table.insert(counted_threads, thread)
end
local pause = 5
server_errors = 0
function init(args)
  pause = tonumber(args[1])
  if args[2] ~= nil and args[2] ~= '' then
    for line in io.lines(args[2]) do
      wrk.headers['Authorization'] = 'Bearer ' .. line
    end
  end
end
function delay()
  return pause
end
function response(status, headers, body)
  if status >= 500 then
    server_errors = server_errors + 1
  end
end
"#;

/// Junk public writes from many clients (a random `X-Forwarded-For` each): sign-in link
/// requests, sign-ups, checkouts and reminders for random addresses, and a tenth malformed
/// (not an address, or not JSON). Each connection pauses the first argument's milliseconds
/// between requests; the second is a `remind_on` date. Requests are made up front, in
/// `init`, so the generator spends its time sending.
pub const JUNK: &str = r#"
local counter = 0
function setup(thread)
  thread:set('thread_index', counter)
  counter = counter + 1
end
local requests = {}
local next_one = 0
local pause = 10
function init(args)
  pause = tonumber(args[1])
  local day = args[2]
  math.randomseed(os.time() * 31 + thread_index)
  for i = 1, 10000 do
    local ip = string.format('10.%d.%d.%d', math.random(0, 255), math.random(0, 255), math.random(1, 254))
    local email = string.format('junk-%d-%d-%d@example.org', thread_index, i, math.random(1, 1000000000))
    local kind = i % 10
    local path, body
    if kind < 3 then
      path, body = '/v1/sessions/magic-link', '{"email":"' .. email .. '"}'
    elseif kind < 5 then
      path = '/v1/accounts'
      body = '{"email":"' .. email .. '","password":"junk ' .. math.random(1, 1000000000) .. ' pass","name":"Junk Junkson"}'
    elseif kind < 7 then
      path = '/v1/checkout'
      body = '{"interval":"once","amount_minor":500,"currency":"usd","email":"' .. email .. '"}'
    elseif kind < 9 then
      path, body = '/v1/reminders', '{"email":"' .. email .. '","remind_on":"' .. day .. '"}'
    elseif i % 20 == 9 then
      path, body = '/v1/sessions/magic-link', '{"email":"not an address ' .. i .. '"}'
    else
      path, body = '/v1/accounts', '{"email": "unterminated'
    end
    requests[#requests + 1] = wrk.format('POST', path, {
      ['Content-Type'] = 'application/json',
      ['X-Forwarded-For'] = ip,
    }, body)
  end
end
function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
function delay()
  return pause
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
    let text = format!("{script}\n{DONE}");
    // Two wrk processes may start on one script at once: a file another is reading is never
    // rewritten, and a new one appears whole (renamed into place).
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let partial = path.with_extension(format!("lua.{}", std::process::id()));
        std::fs::write(&partial, text).expect("the script is written");
        std::fs::rename(&partial, &path).expect("the script is in place");
    }
    path
}

/// Starts wrk; `finish` reads its figures.
pub fn start(load: &Load<'_>) -> tokio::process::Child {
    spawn(tokio::process::Command::new("wrk"), load)
}

/// Starts wrk as an attacker's load: at the lowest CPU priority (nice 19). A flood's own
/// CPU is the attacker's, on machines of their own; on the one machine a benchmark has,
/// the generator would otherwise take the very cores the server is measured on. It still
/// gets every cycle the server leaves idle, and its achieved rate is reported.
pub fn start_as_attacker(load: &Load<'_>) -> tokio::process::Child {
    let mut command = tokio::process::Command::new("nice");
    command.args(["-n", "19", "wrk"]);
    spawn(command, load)
}

fn spawn(mut command: tokio::process::Command, load: &Load<'_>) -> tokio::process::Child {
    let script = script_file(load.script);
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
        server_errors: number("server_errors"),
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
