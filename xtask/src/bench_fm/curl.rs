//! Set-up requests for the benchmark targets, sent with `curl`.
//!
//! Only set-up goes through here (sign-in, schema, seeding, one probe per
//! operation); the measured load comes from `wrk`. curl keeps xtask free of
//! an HTTP client stack and is what an operator would type by hand.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// One HTTP answer: status, the response headers (lower-cased names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The body as JSON (an error names the body when it is not JSON).
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "HTTP {}: body is not JSON: {}",
                self.status,
                clip(&self.body)
            )
        })
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Fails unless the status is 2xx, showing the answer.
    pub fn ok(self, what: &str) -> anyhow::Result<Self> {
        if !(200..300).contains(&self.status) {
            bail!("{what}: HTTP {}: {}", self.status, clip(&self.body));
        }
        Ok(self)
    }
}

/// The start of a long body, for error messages.
pub fn clip(body: &str) -> String {
    body.chars().take(600).collect()
}

/// A request to send.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// PEM file of a CA to trust for https (else the peer certificate is not checked:
    /// set-up only ever talks to loopback targets the benchmark itself names).
    pub ca: Option<&'a str>,
}

/// Sends one request with curl and returns the answer (any status).
pub fn send(request: &Request<'_>) -> anyhow::Result<Answer> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "-D", "-", "-X", request.method]);
    match request.ca {
        Some(ca) => cmd.args(["--cacert", ca]),
        None => cmd.arg("-k"),
    };
    for (name, value) in &request.headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    if request.body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(request.url);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("running curl (is it installed?)")?;
    if let (Some(mut stdin), Some(body)) = (child.stdin.take(), &request.body) {
        stdin
            .write_all(body.as_bytes())
            .context("writing the request body to curl")?;
    }
    let out = child.wait_with_output().context("waiting for curl")?;
    if !out.status.success() {
        bail!(
            "curl {} {}: {}",
            request.method,
            request.url,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Splits curl's `-D -` output (headers, blank line, body) into an answer.
/// Interim `100 Continue` blocks are skipped.
fn parse(raw: &str) -> anyhow::Result<Answer> {
    let mut rest = raw;
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .context("curl printed no HTTP header block")?;
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
        });
    }
}

/// `Authorization: Basic …` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_and_body_after_continue() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-FM-Data-Access-Token: abc\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        let answer = parse(raw).unwrap();
        assert_eq!(answer.status, 201);
        assert_eq!(answer.header("x-fm-data-access-token"), Some("abc"));
        assert_eq!(answer.json().unwrap()["a"], 1);
        assert!(parse("garbage").is_err());
    }

    #[test]
    fn basic_auth_is_rfc_7617() {
        assert_eq!(
            basic("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
