//! The measured operations for each target, as wrk Lua generators plus one
//! probe request each (sent with curl before the load, so a run that would
//! only measure error answers stops with the server's answer instead).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::curl::{self, Request};
use super::records;
use super::wrk::LUA_PRELUDE;

/// The operations issue 5's benchmark names, in report order.
pub const OPS: &[&str] = &["get_one", "find_50", "create", "edit", "sign_in"];

/// One operation on one target.
#[derive(Debug)]
pub struct Op {
    pub name: &'static str,
    /// The complete wrk script.
    pub lua: String,
    pub probe: Probe,
}

/// A single request equivalent to one the load sends.
#[derive(Debug)]
pub struct Probe {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// A JSON pointer to an array that must hold exactly this many rows.
    pub rows: Option<(&'static str, usize)>,
}

impl Probe {
    /// Sends the probe to `base` and fails with the server's answer unless it succeeds.
    pub fn check(
        &self,
        target: &str,
        op: &str,
        base: &str,
        ca: Option<&str>,
    ) -> anyhow::Result<()> {
        let url = format!("{base}{}", self.path);
        let answer = curl::send(&Request {
            method: self.method,
            url: &url,
            headers: self.headers.clone(),
            body: self.body.clone(),
            ca,
        })?
        .ok(&format!(
            "{target} {op} probe {} {}",
            self.method, self.path
        ))?;
        if let Some((pointer, want)) = self.rows {
            let got = answer
                .json()?
                .pointer(pointer)
                .and_then(Value::as_array)
                .map(Vec::len);
            if got != Some(want) {
                bail!(
                    "{target} {op} probe: expected {want} rows at {pointer}, got {got:?}: {}",
                    curl::clip(&answer.body)
                );
            }
        }
        Ok(())
    }
}

/// A Lua string literal.
fn lua_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn script(headers: &[(String, String)], body: &str) -> String {
    let mut lua = String::from(LUA_PRELUDE);
    for (name, value) in headers {
        let _ = writeln!(lua, "wrk.headers[{}] = {}", lua_str(name), lua_str(value));
    }
    lua.push_str(body);
    lua.push('\n');
    lua
}

fn json_headers(authorization: &str) -> Vec<(String, String)> {
    vec![
        ("Authorization".into(), authorization.into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// The ceiling answers everything with its fixed body: one operation.
pub fn ceiling(records: usize) -> Vec<Op> {
    let path = "/hosts/bench/fmi/data/vLatest/databases/Bench/layouts/contacts/records/";
    vec![Op {
        name: "get_one",
        lua: script(
            &[],
            &format!(
                "request = function() return wrk.format(\"GET\", {} .. math.random(1, {records})) end",
                lua_str(path)
            ),
        ),
        probe: Probe {
            method: "GET",
            path: format!("{path}1"),
            headers: vec![],
            body: None,
            rows: Some(("/response/data", 1)),
        },
    }]
}

/// What the Kura target needs to know.
#[derive(Debug, Clone)]
pub struct KuraTarget {
    pub url: String,
    /// The host name in Data API paths (`/hosts/{host}/fmi/data/…`).
    pub host: String,
    pub db: String,
    pub layout: String,
    pub user: String,
    pub password: String,
    pub ca: Option<String>,
    /// Records 1..=records exist (recordIds), as after seeding a fresh app.
    pub records: usize,
    /// The record the edit load rewrites.
    pub edit_record: usize,
}

impl KuraTarget {
    fn db_path(&self) -> String {
        format!(
            "/hosts/{}/fmi/data/vLatest/databases/{}",
            self.host, self.db
        )
    }

    fn layout_path(&self) -> String {
        format!("{}/layouts/{}", self.db_path(), self.layout)
    }

    /// Signs in with the app account and returns the Data API token.
    pub fn sign_in(&self) -> anyhow::Result<String> {
        let url = format!("{}{}/sessions", self.url, self.db_path());
        let answer = curl::send(&Request {
            method: "POST",
            url: &url,
            headers: vec![
                (
                    "Authorization".into(),
                    curl::basic(&self.user, &self.password),
                ),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: Some("{}".into()),
            ca: self.ca.as_deref(),
        })?
        .ok("Kura Data API sign-in")?;
        answer
            .header("x-fm-data-access-token")
            .map(str::to_owned)
            .context("Kura's sign-in answer has no X-FM-Data-Access-Token header")
    }

    /// Creates `records` contacts through the Data API in one curl process
    /// (keep-alive), for a fresh app whose recordIds then run 1..=records.
    pub fn seed(&self, token: &str) -> anyhow::Result<()> {
        let url = format!("{}{}/records", self.url, self.layout_path());
        let mut config = String::new();
        for i in 0..self.records {
            let body = json!({"fieldData": kura_fields(&records::record(i))}).to_string();
            let _ = write!(
                config,
                "url = {}\nrequest = \"POST\"\nheader = {}\nheader = \"Content-Type: application/json\"\n\
                 data-binary = {}\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\n\"\n",
                lua_str(&url),
                lua_str(&format!("Authorization: Bearer {token}")),
                lua_str(&body),
            );
            match &self.ca {
                Some(ca) => {
                    let _ = writeln!(config, "cacert = {}", lua_str(ca));
                }
                None => config.push_str("insecure\n"),
            }
            if i + 1 < self.records {
                config.push_str("next\n");
            }
        }
        eprintln!(
            "xtask: seeding {} Kura records through the Data API",
            self.records
        );
        let mut child = Command::new("curl")
            .args(["-sS", "-K", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running curl to seed Kura")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(config.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let codes = String::from_utf8_lossy(&out.stdout);
        let failed = codes.lines().filter(|c| !c.starts_with('2')).count();
        if failed > 0 || codes.lines().count() != self.records {
            bail!(
                "seeding Kura: {failed} of {} creates failed (codes seen: {})",
                self.records,
                curl::clip(&codes.lines().collect::<Vec<_>>().join(" "))
            );
        }
        Ok(())
    }

    /// The five operations against the Data API, authorised by `token`.
    pub fn ops(&self, token: &str) -> Vec<Op> {
        let layout = self.layout_path();
        let bearer = json_headers(&format!("Bearer {token}"));
        let records_path = format!("{layout}/records/");
        let find_path = format!("{layout}/_find");
        let edit_path = format!("{layout}/records/{}", self.edit_record);
        let create_body = |n: &str| {
            format!(
                r#"'{{"fieldData":{{"first_name":"Load' .. {n} .. '","last_name":"Bench","email":"load' .. {n} .. '@example.com","age":' .. math.random(18, 80) .. ',"born":"05/17/1990","active":1,"notes":"created by wrk"}}}}'"#
            )
        };
        let probe_find = json!({"query": [{"age": "40...45", "active": "1"}], "limit": "50"});
        let basic = json_headers(&curl::basic(&self.user, &self.password));
        vec![
            Op {
                name: "get_one",
                lua: script(
                    &bearer,
                    &format!(
                        "request = function() return wrk.format(\"GET\", {} .. math.random(1, {})) end",
                        lua_str(&records_path),
                        self.records
                    ),
                ),
                probe: Probe {
                    method: "GET",
                    path: format!("{records_path}1"),
                    headers: bearer.clone(),
                    body: None,
                    rows: Some(("/response/data", 1)),
                },
            },
            Op {
                name: "find_50",
                lua: script(
                    &bearer,
                    &format!(
                        "request = function() local a = math.random(18, 75) return wrk.format(\"POST\", {}, nil, \
                     '{{\"query\":[{{\"age\":\"' .. a .. '...' .. (a + 5) .. '\",\"active\":\"1\"}}],\"limit\":\"50\"}}') end",
                        lua_str(&find_path)
                    ),
                ),
                probe: Probe {
                    method: "POST",
                    path: find_path.clone(),
                    headers: bearer.clone(),
                    body: Some(probe_find.to_string()),
                    rows: Some(("/response/data", 50)),
                },
            },
            Op {
                name: "create",
                lua: script(
                    &bearer,
                    &format!(
                        "request = function() counter = counter + 1 return wrk.format(\"POST\", {}, nil, {}) end",
                        lua_str(&format!("{layout}/records")),
                        create_body("counter")
                    ),
                ),
                probe: Probe {
                    method: "POST",
                    path: format!("{layout}/records"),
                    headers: bearer.clone(),
                    body: Some(json!({"fieldData": kura_fields(&records::record(0))}).to_string()),
                    rows: None,
                },
            },
            Op {
                name: "edit",
                lua: script(
                    &bearer,
                    &format!(
                        "request = function() return wrk.format(\"PATCH\", {}, nil, '{{\"fieldData\":{{\"age\":' .. math.random(18, 80) .. '}}}}') end",
                        lua_str(&edit_path)
                    ),
                ),
                probe: Probe {
                    method: "PATCH",
                    path: edit_path.clone(),
                    headers: bearer.clone(),
                    body: Some(r#"{"fieldData":{"age":42}}"#.into()),
                    rows: None,
                },
            },
            Op {
                name: "sign_in",
                lua: script(
                    &basic,
                    &format!(
                        "request = function() return wrk.format(\"POST\", {}, nil, \"{{}}\") end",
                        lua_str(&format!("{}/sessions", self.db_path()))
                    ),
                ),
                probe: Probe {
                    method: "POST",
                    path: format!("{}/sessions", self.db_path()),
                    headers: basic.clone(),
                    body: Some("{}".into()),
                    rows: None,
                },
            },
        ]
    }
}

/// A contact's `fieldData` for the benchmark layout.
fn kura_fields(r: &records::Contact) -> Value {
    json!({
        "first_name": r.first_name, "last_name": r.last_name, "email": r.email,
        "age": r.age, "born": r.born_us, "active": i32::from(r.active), "notes": r.notes
    })
}

/// The same five operations against PocketBase's record API.
pub fn pocketbase(token: &str, ids: &[String]) -> Vec<Op> {
    let bearer = json_headers(&format!("Bearer {token}"));
    let records = "/api/collections/contacts/records";
    let id_table = format!(
        "local ids = {{{}}}\n",
        ids.iter().map(|i| lua_str(i)).collect::<Vec<_>>().join(",")
    );
    let filter = |a: &str, b: &str| {
        format!(
            "{records}?perPage=50&skipTotal=1&filter=(age%3E%3D{a}%20%26%26%20age%3C%3D{b}%20%26%26%20active%3Dtrue)"
        )
    };
    let first = ids.first().cloned().unwrap_or_default();
    let login_headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
    let login_body =
        json!({"identity": super::servers::PB_USER.0, "password": super::servers::PB_USER.1})
            .to_string();
    let r0 = records::record(0);
    let create_probe = json!({"first_name": r0.first_name, "last_name": r0.last_name, "email": r0.email,
        "age": r0.age, "born": r0.born_iso, "active": r0.active, "notes": r0.notes});
    vec![
        Op {
            name: "get_one",
            lua: script(
                &bearer,
                &format!(
                    "{id_table}request = function() return wrk.format(\"GET\", {} .. ids[math.random(1, #ids)]) end",
                    lua_str(&format!("{records}/"))
                ),
            ),
            probe: Probe {
                method: "GET",
                path: format!("{records}/{first}"),
                headers: bearer.clone(),
                body: None,
                rows: None,
            },
        },
        Op {
            name: "find_50",
            lua: script(
                &bearer,
                &format!(
                    "request = function() local a = math.random(18, 75) return wrk.format(\"GET\", {} .. a .. {} .. (a + 5) .. {}) end",
                    lua_str(&format!(
                        "{records}?perPage=50&skipTotal=1&filter=(age%3E%3D"
                    )),
                    lua_str("%20%26%26%20age%3C%3D"),
                    lua_str("%20%26%26%20active%3Dtrue)")
                ),
            ),
            probe: Probe {
                method: "GET",
                path: filter("40", "45"),
                headers: bearer.clone(),
                body: None,
                rows: Some(("/items", 50)),
            },
        },
        Op {
            name: "create",
            lua: script(
                &bearer,
                &format!(
                    "request = function() counter = counter + 1 return wrk.format(\"POST\", {}, nil, \
                 '{{\"first_name\":\"Load' .. counter .. '\",\"last_name\":\"Bench\",\"email\":\"load' .. counter .. '@example.com\",\"age\":' .. math.random(18, 80) .. ',\"born\":\"1990-05-17 12:00:00.000Z\",\"active\":true,\"notes\":\"created by wrk\"}}') end",
                    lua_str(records)
                ),
            ),
            probe: Probe {
                method: "POST",
                path: records.into(),
                headers: bearer.clone(),
                body: Some(create_probe.to_string()),
                rows: None,
            },
        },
        Op {
            name: "edit",
            lua: script(
                &bearer,
                &format!(
                    "request = function() return wrk.format(\"PATCH\", {}, nil, '{{\"age\":' .. math.random(18, 80) .. '}}') end",
                    lua_str(&format!("{records}/{first}"))
                ),
            ),
            probe: Probe {
                method: "PATCH",
                path: format!("{records}/{first}"),
                headers: bearer.clone(),
                body: Some(r#"{"age":42}"#.into()),
                rows: None,
            },
        },
        Op {
            name: "sign_in",
            lua: script(
                &login_headers,
                &format!(
                    "request = function() return wrk.format(\"POST\", {}, nil, {}) end",
                    lua_str("/api/collections/users/auth-with-password"),
                    lua_str(&login_body)
                ),
            ),
            probe: Probe {
                method: "POST",
                path: "/api/collections/users/auth-with-password".into(),
                headers: login_headers.clone(),
                body: Some(login_body.clone()),
                rows: None,
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lua_strings_escape_quotes_and_backslashes() {
        assert_eq!(lua_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn kura_ops_cover_the_issue_and_carry_the_token() {
        let target = KuraTarget {
            url: "https://127.0.0.1:1".into(),
            host: "bench".into(),
            db: "Bench".into(),
            layout: "contacts".into(),
            user: "bench".into(),
            password: "pw".into(),
            ca: None,
            records: 10_000,
            edit_record: 1,
        };
        let ops = target.ops("tok");
        assert_eq!(ops.iter().map(|o| o.name).collect::<Vec<_>>(), OPS);
        assert!(
            ops[0].lua.contains("\"Bearer tok\"") && ops[0].lua.contains("math.random(1, 10000)")
        );
        assert!(
            ops[4].lua.contains("Basic ")
                && ops[4]
                    .lua
                    .contains("/hosts/bench/fmi/data/vLatest/databases/Bench/sessions")
        );
        let pb = pocketbase("t", &["a1".into(), "b2".into()]);
        assert_eq!(pb.iter().map(|o| o.name).collect::<Vec<_>>(), OPS);
        assert!(pb[0].lua.contains("local ids = {\"a1\",\"b2\"}"));
    }
}
