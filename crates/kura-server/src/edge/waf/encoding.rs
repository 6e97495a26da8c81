//! Shape checks on the request target: percent-encoding that is malformed
//! or decodes to something other than UTF-8 (overlong forms such as
//! `%c0%af` included), NUL bytes, double-encoded traversal (`%252e%252e`)
//! and `..` path segments.

use super::RuleId;

/// A finding about the URL's encoding.
pub type Problem = (RuleId, &'static str);

/// Percent-decodes `raw` strictly (`plus_as_space` for form encoding):
/// a `%` must start two hex digits and the result must be UTF-8 without
/// NUL bytes.
pub fn decode(raw: &str, plus_as_space: bool) -> Result<String, RuleId> {
    if !(raw.contains('%') || plus_as_space && raw.contains('+')) {
        if raw.contains('\0') {
            return Err(RuleId::NulByte);
        }
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16));
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).map_err(|_| RuleId::BadEncoding)?);
                        i += 3;
                    }
                    _ => return Err(RuleId::BadEncoding),
                }
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return Err(RuleId::NulByte);
    }
    String::from_utf8(out).map_err(|_| RuleId::BadEncoding)
}

/// Encoded forms of `.`, `/`, `\` and NUL after a second round of
/// encoding (`%25` + the first round's hex).
fn double_encoded(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    ["%252e", "%252f", "%255c", "%2500", "%25c0", "%25c1", "%25u"]
        .iter()
        .any(|p| lower.contains(p))
}

/// Checks the raw path; returns the decoded segments when it is sound.
pub fn check_path(raw: &str) -> Result<Vec<String>, Problem> {
    if double_encoded(raw) {
        return Err((RuleId::DoubleEncoding, "path"));
    }
    if raw.to_ascii_lowercase().contains("%u") {
        return Err((RuleId::BadEncoding, "path"));
    }
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        let decoded = decode(segment, false).map_err(|r| (r, "path"))?;
        // A decoded `/` or `\` inside a segment, or a `..` segment, walks
        // out of the route it was meant for.
        if decoded == ".." || decoded == "." {
            return Err((RuleId::PathTraversal, "path"));
        }
        if decoded.split(['/', '\\']).any(|part| part == "..") {
            return Err((RuleId::PathTraversal, "path"));
        }
        segments.push(decoded);
    }
    Ok(segments)
}

/// Checks the raw query; returns the decoded names and values.
pub fn check_query(raw: &str) -> Result<Vec<(String, String)>, Problem> {
    if double_encoded(raw) {
        return Err((RuleId::DoubleEncoding, "query"));
    }
    if raw.to_ascii_lowercase().contains("%u") {
        return Err((RuleId::BadEncoding, "query"));
    }
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k, true).map_err(|r| (r, "query"))?;
        let v = decode(v, true).map_err(|r| (r, "query"))?;
        if traverses(&v) {
            return Err((RuleId::PathTraversal, "query"));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Whether a value climbs directories (`../`, `..\`, or is `..`).
pub fn traverses(value: &str) -> bool {
    value == ".." || value.contains("../") || value.contains("..\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_strict() {
        assert_eq!(decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert_eq!(decode("caf%C3%A9", false).unwrap(), "café");
        assert_eq!(decode("%zz", false), Err(RuleId::BadEncoding));
        assert_eq!(decode("%4", false), Err(RuleId::BadEncoding));
        assert_eq!(
            decode("%c0%af", false),
            Err(RuleId::BadEncoding),
            "overlong /"
        );
        assert_eq!(
            decode("%e0%80%ae", false),
            Err(RuleId::BadEncoding),
            "overlong ."
        );
        assert_eq!(decode("%ff", false), Err(RuleId::BadEncoding));
        assert_eq!(decode("a%00b", false), Err(RuleId::NulByte));
    }

    #[test]
    fn traversal_and_double_encoding_are_caught() {
        assert_eq!(
            check_path("/api/v1/x/..").unwrap_err().0,
            RuleId::PathTraversal
        );
        assert_eq!(
            check_path("/a/%2e%2e/b").unwrap_err().0,
            RuleId::PathTraversal
        );
        assert_eq!(
            check_path("/a/..%2fetc").unwrap_err().0,
            RuleId::PathTraversal
        );
        assert_eq!(
            check_path("/a/..%5cwin").unwrap_err().0,
            RuleId::PathTraversal
        );
        assert_eq!(
            check_path("/a/%252e%252e/b").unwrap_err().0,
            RuleId::DoubleEncoding
        );
        assert_eq!(check_path("/a/%u002e").unwrap_err().0, RuleId::BadEncoding);
        assert_eq!(
            check_path("/a/%c0%ae%c0%ae/").unwrap_err().0,
            RuleId::BadEncoding
        );
        assert_eq!(
            check_query("file=../../etc/passwd").unwrap_err().0,
            RuleId::PathTraversal
        );
        assert_eq!(
            check_query("f=%252e%252e%252f").unwrap_err().0,
            RuleId::DoubleEncoding
        );
        assert!(check_path("/api/v1/teams/0190/members").is_ok());
        assert!(check_path("/files/report..final.pdf").is_ok());
        let q = check_query("action=auth.signin&note=100%25+sure&x").unwrap();
        assert_eq!(q[1], ("note".into(), "100% sure".into()));
        assert_eq!(q[2], ("x".into(), String::new()));
    }
}
