//! One measured load run: `wrk` with a Lua request generator, and the server
//! process's own CPU time read from `/proc/<pid>/stat` before and after.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// How hard and how long to push.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub duration_secs: u64,
    pub connections: u32,
    pub threads: u32,
    /// Niceness for wrk (the servers get the same, so neither starves the other).
    pub nice: i32,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub target: String,
    pub op: String,
    pub rps: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub socket_errors: String,
    /// Server CPU (user + system) per request, when the server's pid is known.
    pub server_cpu_ms_per_req: Option<f64>,
    /// Cores the server kept busy on average during the run.
    pub server_cores: Option<f64>,
    pub load_avg_before: f64,
}

/// Lines every generator starts with: a per-thread random seed, so threads do
/// not replay the same id sequence.
pub const LUA_PRELUDE: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
end
counter = 0
"#;

/// Runs wrk against `base_url` with the generator in `lua`, measuring `pid`.
pub fn run(
    load: Load,
    target: &str,
    op: &str,
    base_url: &str,
    lua: &Path,
    pid: Option<u32>,
) -> anyhow::Result<Measured> {
    let load_avg_before = load_average();
    let cpu_before = pid.map(cpu_ticks).transpose()?;
    let started = Instant::now();
    let out = Command::new("nice")
        .arg("-n")
        .arg(load.nice.to_string())
        .arg("wrk")
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration_secs))
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(lua)
        .arg(base_url)
        .output()
        .context("running wrk")?;
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = pid.map(cpu_ticks).transpose()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed for {target} {op}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut measured = parse(&text).with_context(|| format!("reading wrk's output:\n{text}"))?;
    measured.target = target.into();
    measured.op = op.into();
    measured.load_avg_before = load_avg_before;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu_secs = (after.saturating_sub(before)) as f64 / clock_ticks_per_second()?;
        if measured.requests > 0 {
            measured.server_cpu_ms_per_req =
                Some(round3(1000.0 * cpu_secs / measured.requests as f64));
        }
        measured.server_cores = Some(round3(cpu_secs / wall));
    }
    Ok(measured)
}

/// Reads the figures out of wrk's `--latency` report.
fn parse(text: &str) -> anyhow::Result<Measured> {
    let mut m = Measured {
        target: String::new(),
        op: String::new(),
        rps: f64::NAN,
        requests: 0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        non_2xx: 0,
        socket_errors: String::new(),
        server_cpu_ms_per_req: None,
        server_cores: None,
        load_avg_before: 0.0,
    };
    let mut saw_rps = false;
    for line in text.lines() {
        let line = line.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", value] => {
                m.rps = value.parse()?;
                saw_rps = true;
            }
            ["50%", value] => m.p50_ms = millis(value)?,
            ["99%", value] => m.p99_ms = millis(value)?,
            [count, "requests", "in", ..] => m.requests = count.parse()?,
            ["Non-2xx", "or", "3xx", "responses:", count] => m.non_2xx = count.parse()?,
            ["Socket", "errors:", ..] => m.socket_errors = line.into(),
            _ => {}
        }
    }
    if !saw_rps || m.p50_ms.is_nan() {
        bail!("no Requests/sec or latency distribution in wrk's output");
    }
    Ok(m)
}

/// wrk prints durations as `812.00us`, `1.23ms`, `2.01s` or `1.02m`.
fn millis(value: &str) -> anyhow::Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("duration without a unit: {value}"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => bail!("unknown duration unit in {value}"),
    };
    Ok(round3(number * factor))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the server still running?)"))?;
    // The command name may contain spaces; fields after it are fixed.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse()
            .context("non-numeric /proc stat field")
    };
    Ok(field(11)? + field(12)?)
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 2s test @ https://127.0.0.1:4433
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.50us  300.00us  12.00ms   90.00%
    Req/Sec     9.80k   500.00     10.50k    70.00%
  Latency Distribution
     50%  780.00us
     75%    0.90ms
     90%    1.10ms
     99%    2.50ms
  39000 requests in 2.00s, 25.00MB read
  Non-2xx or 3xx responses: 7
Requests/sec:  19500.25
Transfer/sec:     12.50MB
";

    #[test]
    fn reads_a_wrk_report() {
        let m = parse(REPORT).unwrap();
        assert_eq!(m.requests, 39000);
        assert!((m.rps - 19500.25).abs() < 1e-9);
        assert!((m.p50_ms - 0.78).abs() < 1e-9);
        assert!((m.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!(m.non_2xx, 7);
        assert!(parse("wrk: connection refused").is_err());
    }

    #[test]
    fn durations_convert_to_milliseconds() {
        assert_eq!(millis("1.50s").unwrap(), 1500.0);
        assert_eq!(millis("1m").unwrap(), 60_000.0);
        assert!(millis("12").is_err());
        assert!(millis("3h").is_err());
    }

    #[test]
    fn own_cpu_time_moves_with_work() {
        let before = cpu_ticks(std::process::id()).unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while cpu_ticks(std::process::id()).unwrap() == before && spin.elapsed().as_secs() < 10 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(
            cpu_ticks(std::process::id()).unwrap() > before,
            "CPU ticks never moved"
        );
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(rss_kib(u32::MAX).is_none());
    }
}
