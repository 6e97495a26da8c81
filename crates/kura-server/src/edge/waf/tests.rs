//! The WAF's rules, one `check` helper per request shape.

use http::{HeaderMap, HeaderValue, Method};

use super::signatures::tests::{LEGITIMATE, SCRIPT_ATTACKS, SQL_ATTACKS};
use super::*;

fn waf() -> Waf {
    Waf::new(Limits::default()).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

/// The rule that blocks `path?query` with `headers`, if any.
fn head(path: &str, query: Option<&str>, h: &HeaderMap) -> Option<RuleId> {
    waf()
        .inspect_head(
            RequestView {
                method: &Method::POST,
                path,
                query,
                headers: h,
                api: path.starts_with("/api/"),
            },
            Modes::default(),
        )
        .blocked()
        .map(|f| f.rule)
}

fn json_body(body: &serde_json::Value) -> Option<RuleId> {
    let h = headers(&[("content-type", "application/json")]);
    waf()
        .inspect_body(&h, body.to_string().as_bytes(), Modes::default())
        .blocked()
        .map(|f| f.rule)
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn attack_lists_are_blocked_in_queries_json_and_forms() {
    let none = HeaderMap::new();
    for a in SQL_ATTACKS {
        let q = format!("action={}", encode(a));
        assert_eq!(
            head("/api/v1/events", Some(&q), &none),
            Some(RuleId::SqlInjection),
            "{a}"
        );
        assert_eq!(
            json_body(&serde_json::json!({"name": a})),
            Some(RuleId::SqlInjection),
            "{a}"
        );
    }
    for a in SCRIPT_ATTACKS {
        let q = format!("q={}", encode(a));
        assert!(head("/api/v1/events", Some(&q), &none).is_some(), "{a}");
        assert!(
            json_body(&serde_json::json!({"deep": [{"note": a}]})).is_some(),
            "{a}"
        );
    }
    let h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
    let form = format!("user={}&x=1", encode("' OR '1'='1"));
    let v = waf().inspect_body(&h, form.as_bytes(), Modes::default());
    assert_eq!(v.blocked().map(|f| f.rule), Some(RuleId::SqlInjection));
    for a in SQL_ATTACKS.iter().chain(SCRIPT_ATTACKS) {
        // Multipart text fields, field names and file names.
        for (name, file, value) in [
            ("note", None, *a),
            (*a, None, "plain"),
            ("upload", Some(*a), "file bytes"),
        ] {
            let body = multipart_body(&[("title", None, "Hello"), (name, file, value)]);
            assert!(
                multipart(&body).is_some(),
                "multipart {name:?} {file:?} {value:?}"
            );
        }
        // Headers applications log or echo.
        assert!(
            head("/api/v1/me", None, &headers(&[("user-agent", a)])).is_some(),
            "user-agent {a}"
        );
        let referer = format!("https://shop.example/search?q={}", encode(a));
        assert!(
            head("/api/v1/me", None, &headers(&[("referer", &referer)])).is_some(),
            "referer {a}"
        );
    }
    let body = multipart_body(&[("upload", Some("../../etc/passwd"), "x")]);
    assert_eq!(multipart(&body), Some(RuleId::PathTraversal));
}

/// A multipart body of `(name, filename, content)` parts.
fn multipart_body(parts: &[(&str, Option<&str>, &str)]) -> String {
    let mut body = String::from("--XyZ");
    for (name, file, content) in parts {
        // Browsers escape quotes and line breaks in names.
        let esc = |v: &str| {
            v.replace('"', "%22")
                .replace('\r', "%0D")
                .replace('\n', "%0A")
        };
        let file = file.map_or(String::new(), |f| format!("; filename=\"{}\"", esc(f)));
        let name = esc(name);
        body += &format!(
            "\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n{content}\r\n--XyZ"
        );
    }
    body + "--\r\n"
}

fn multipart(body: &str) -> Option<RuleId> {
    let mp = headers(&[("content-type", "multipart/form-data; boundary=XyZ")]);
    waf()
        .inspect_body(&mp, body.as_bytes(), Modes::default())
        .blocked()
        .map(|f| f.rule)
}

#[test]
fn legitimate_requests_pass() {
    let none = HeaderMap::new();
    for l in LEGITIMATE {
        let q = format!("q={}", encode(l));
        assert_eq!(head("/api/v1/events", Some(&q), &none), None, "{l}");
        assert_eq!(
            json_body(&serde_json::json!({"display_name": l, l.to_string(): [l]})),
            None,
            "{l}"
        );
    }
    for l in LEGITIMATE {
        let body = multipart_body(&[("title", None, l), (l, Some(l), "<script>bytes")]);
        assert_eq!(multipart(&body), None, "multipart {l}");
    }
    // File contents are not inspected.
    let body = multipart_body(&[("upload", Some("notes.sql"), "' OR '1'='1; DROP TABLE x")]);
    assert_eq!(multipart(&body), None);
    for ua in [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "python-requests/2.32.3",
        "curl/8.5.0",
        "FileMaker/21.0 (Windows NT 10.0; x64)",
    ] {
        assert_eq!(
            head("/api/v1/me", None, &headers(&[("user-agent", ua)])),
            None,
            "{ua}"
        );
    }
    for referer in [
        "https://kura.example/console/teams?select=members&order=name",
        "https://www.google.com/search?q=select+the+best+plan+o%27brien",
    ] {
        assert_eq!(
            head("/api/v1/me", None, &headers(&[("referer", referer)])),
            None,
            "{referer}"
        );
    }
    // The shapes of Kura's own requests.
    let h = headers(&[
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "42"),
        ("authorization", "Bearer kura_pat_abc"),
    ]);
    assert_eq!(
        head(
            "/api/v1/teams/0190c2a4-0000-7000-8000-000000000000/members",
            None,
            &h
        ),
        None
    );
    assert_eq!(
        head(
            "/api/v1/events",
            Some("action=auth.signin&limit=50&cursor=12"),
            &none
        ),
        None
    );
}

#[test]
fn sizes_shapes_and_encodings_are_enforced() {
    let none = HeaderMap::new();
    let long = "a".repeat(9000);
    assert_eq!(
        head(&format!("/{long}"), None, &none),
        Some(RuleId::UrlTooLong)
    );
    assert_eq!(RuleId::UrlTooLong.status(), http::StatusCode::URI_TOO_LONG);
    let big = headers(&[("x-big", &"b".repeat(9000))]);
    assert_eq!(head("/", None, &big), Some(RuleId::HeaderTooLarge));
    let many: Vec<(String, String)> = (0..70).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        head("/", None, &headers(&many)),
        Some(RuleId::TooManyHeaders)
    );
    let smuggle = headers(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
    assert_eq!(head("/", None, &smuggle), Some(RuleId::Smuggling));
    let two = headers(&[("content-length", "5"), ("content-length", "6")]);
    assert_eq!(head("/", None, &two), Some(RuleId::Smuggling));
    let odd = headers(&[("transfer-encoding", "gzip, chunked")]);
    assert_eq!(head("/", None, &odd), Some(RuleId::Smuggling));
    let latin = headers(&[
        ("content-type", "application/json; charset=iso-8859-1"),
        ("content-length", "2"),
    ]);
    assert_eq!(head("/api/v1/teams", None, &latin), Some(RuleId::Charset));
    let untyped = headers(&[("content-length", "2")]);
    assert_eq!(
        head("/api/v1/teams", None, &untyped),
        Some(RuleId::ContentType)
    );
    assert_eq!(
        head("/echo", None, &untyped),
        None,
        "outside the APIs a type is not required"
    );
    let junk = headers(&[("content-type", "json"), ("content-length", "2")]);
    assert_eq!(
        head("/api/v1/teams", None, &junk),
        Some(RuleId::ContentType)
    );
    assert_eq!(
        head("/api/v1/x", Some("a=%c0%af"), &none),
        Some(RuleId::BadEncoding)
    );
    assert_eq!(
        head("/api/v1/x", Some("a=b%00"), &none),
        Some(RuleId::NulByte)
    );
    assert_eq!(
        head("/api/%252e%252e/x", None, &none),
        Some(RuleId::DoubleEncoding)
    );
    assert_eq!(
        head("/api/v1/%2e%2e/secret", None, &none),
        Some(RuleId::PathTraversal)
    );
    let mp = headers(&[("content-type", "multipart/form-data; boundary=XyZ")]);
    let body: String = (0..70)
        .map(|i| format!("--XyZ\r\ncontent-disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"))
        .collect::<String>()
        + "--XyZ--\r\n";
    let v = waf().inspect_body(&mp, body.as_bytes(), Modes::default());
    assert_eq!(v.blocked().map(|f| f.rule), Some(RuleId::TooManyParts));
}

#[test]
fn detect_mode_records_without_blocking_and_off_skips() {
    let none = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        path: "/api/v1/events",
        query: Some("action=1%20UNION%20SELECT%201"),
        headers: &none,
        api: true,
    };
    let mut modes = Modes::default();
    modes.apply(&[(RuleId::SqlInjection, Mode::Detect)]);
    let v = waf().inspect_head(view, modes);
    assert_eq!(v.blocked(), None);
    assert_eq!(v.findings.len(), 1);
    assert_eq!(v.findings[0].rule, RuleId::SqlInjection);
    assert_eq!(v.findings[0].mode, Mode::Detect);
    modes.apply(&[(RuleId::SqlInjection, Mode::Off)]);
    assert!(waf().inspect_head(view, modes).findings.is_empty());
}

#[test]
fn json_bodies_are_inspected_as_they_parse() {
    let h = headers(&[("content-type", "application/json")]);
    let inspect = |body: &str, modes: Modes| waf().inspect_body(&h, body.as_bytes(), modes);
    // Every occurrence of a repeated key is inspected, not only the last.
    let repeated = r#"{"fieldData": {"a": "1' UNION SELECT password FROM users--", "a": "fine"}}"#;
    assert_eq!(
        inspect(repeated, Modes::default())
            .blocked()
            .map(|f| f.rule),
        Some(RuleId::SqlInjection)
    );
    // Keys are values too.
    let key = r#"{"<script>alert(1)</script>": 1}"#;
    assert_eq!(
        inspect(key, Modes::default()).blocked().map(|f| f.rule),
        Some(RuleId::ScriptInjection)
    );
    // A body that turns out not to be JSON is the handler's to refuse:
    // what detect mode saw before the parse failed is dropped with it.
    let mut detect = Modes::default();
    detect.apply(&[(RuleId::SqlInjection, Mode::Detect)]);
    let broken = r#"{"a": "1 UNION SELECT 1", "b": }"#;
    assert!(inspect(broken, detect).findings.is_empty());
    let whole = r#"{"a": "1 UNION SELECT 1", "b": 2}"#;
    assert_eq!(inspect(whole, detect).findings.len(), 1);
    assert!(inspect(broken, Modes::default()).blocked().is_some());
}

#[test]
fn policies_name_real_rules_and_tenants_only_relax_content_rules() {
    let p: WafPolicy =
        serde_json::from_str(r#"{"rules": {"150": "detect", "160": "off"}}"#).unwrap();
    assert_eq!(
        p.modes(true).unwrap(),
        vec![
            (RuleId::SqlInjection, Mode::Detect),
            (RuleId::ScriptInjection, Mode::Off)
        ]
    );
    let p: WafPolicy = serde_json::from_str(r#"{"rules": {"999": "off"}}"#).unwrap();
    assert!(matches!(
        p.modes(false),
        Err(WafPolicyError::UnknownRule(_))
    ));
    let p: WafPolicy = serde_json::from_str(r#"{"rules": {"120": "off"}}"#).unwrap();
    assert_eq!(p.modes(true), Err(WafPolicyError::PlatformOnly(120)));
    assert!(p.modes(false).is_ok());
    assert!(serde_json::from_str::<WafPolicy>(r#"{"rules": {"150": "maybe"}}"#).is_err());
    for r in RuleId::ALL {
        assert_eq!(RuleId::from_id(r.id()), Some(r));
    }
}
