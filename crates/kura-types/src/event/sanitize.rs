//! Keeping secrets out of the log.
//!
//! A security log is read by many people and exported to SIEMs, so nothing in
//! it may grant access or expose cardholder data. Values are redacted rather
//! than refused: refusing the event would fail the action it describes (no
//! event, no action), while redacting keeps the fact that something was there.
//!
//! Rules:
//! - A detail whose key looks like a secret (see [`is_secret_key`]) has its
//!   value replaced by [`REDACTED`], at any depth.
//! - A string that holds a private key in PEM form, or an HTTP `Authorization`
//!   value (`Bearer …`, `Basic …`), is replaced by [`REDACTED`] whatever its
//!   key.
//! - A run of 13 to 19 digits (optionally grouped by single spaces or dashes)
//!   that passes the Luhn check is a payment card number and is replaced by
//!   [`REDACTED_CARD`], in strings and in JSON numbers. Runs of more than 19
//!   digits are checked group by group; a card number hidden inside one long
//!   ungrouped digit string is not found.

use serde_json::{Map, Value};

/// What a secret value is replaced by.
pub const REDACTED: &str = "[REDACTED]";

/// What a payment card number is replaced by.
pub const REDACTED_CARD: &str = "[REDACTED CARD NUMBER]";

/// Words that make a key secret wherever they appear in it.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "otp",
    "totp",
    "cvv",
    "cvc",
    "pin",
    "apikey",
    "privatekey",
    "seed",
    "mnemonic",
    "bearer",
    "pan",
];

/// Words that, next to `key`, make it key material (`private_key`,
/// `data_key`, `apiKey`).
const KEY_QUALIFIERS: &[&str] = &[
    "private",
    "secret",
    "master",
    "data",
    "signing",
    "encryption",
    "raw",
    "symmetric",
    "api",
    "access",
    "session",
    "material",
];

/// Final words that name a harmless fact about a secret rather than the
/// secret itself (`token_id`, `key_version`, `password_changed_at`).
const HARMLESS_SUFFIXES: &[&str] = &[
    "id", "ids", "version", "kind", "type", "name", "scope", "at", "count", "expires", "expiry",
    "policy", "length", "len", "changed", "required", "enabled",
];

/// Splits a key into lowercase words at non-alphanumerics and camelCase humps.
fn words(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Whether a detail key names a secret: it holds a word such as `password`,
/// `token`, `secret`, `authorization` or `cookie`, or it is key material
/// (`key`, `private_key`, `data_key`, `apiKey`), unless its last word names a
/// harmless fact about the secret (`token_id`, `key_version`).
pub fn is_secret_key(key: &str) -> bool {
    let words = words(key);
    let Some(last) = words.last() else {
        return false;
    };
    if words.len() > 1 && HARMLESS_SUFFIXES.contains(&last.as_str()) {
        return false;
    }
    let joined: String = words.concat();
    if SECRET_WORDS.iter().any(|w| words.iter().any(|x| x == w)) {
        return true;
    }
    if ["apikey", "privatekey", "secretkey", "accesskey"]
        .iter()
        .any(|w| joined.contains(w))
    {
        return true;
    }
    let has_key = words.iter().any(|w| w == "key" || w == "keys");
    has_key && (words.len() == 1 || words.iter().any(|w| KEY_QUALIFIERS.contains(&w.as_str())))
}

/// Whether a string value is a secret whatever its key.
fn is_secret_value(s: &str) -> bool {
    let t = s.trim_start();
    let lower_prefix: String = t.chars().take(7).collect::<String>().to_ascii_lowercase();
    (s.contains("-----BEGIN") && s.contains("PRIVATE KEY"))
        || lower_prefix.starts_with("bearer ")
        || lower_prefix.starts_with("basic ")
}

/// Cleans `details` in place; returns how many values were replaced.
pub fn sanitize_details(details: &mut Map<String, Value>) -> usize {
    let mut n = 0;
    for (key, value) in details.iter_mut() {
        if is_secret_key(key) {
            if *value != Value::String(REDACTED.to_owned()) && !value.is_null() {
                *value = Value::String(REDACTED.to_owned());
                n += 1;
            }
        } else {
            n += sanitize_value(value);
        }
    }
    n
}

fn sanitize_value(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => sanitize_details(map),
        Value::Array(items) => items.iter_mut().map(sanitize_value).sum(),
        Value::String(s) => {
            if is_secret_value(s) {
                *value = Value::String(REDACTED.to_owned());
                1
            } else if let Some(clean) = redact_card_numbers(s) {
                *value = Value::String(clean);
                1
            } else {
                0
            }
        }
        Value::Number(num) => {
            let digits = num.as_u64().map(|u| u.to_string()).unwrap_or_default();
            if redact_card_numbers(&digits).is_some() {
                *value = Value::String(REDACTED_CARD.to_owned());
                1
            } else {
                0
            }
        }
        Value::Null | Value::Bool(_) => 0,
    }
}

/// A group of adjacent digits: byte range and digit values.
struct Group {
    start: usize,
    end: usize,
    digits: Vec<u8>,
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Returns `s` with every payment card number replaced, or `None` if it held
/// none.
/// The byte ranges of UUID-shaped tokens (8-4-4-4-12 hex digits) in
/// `bytes`. Event ids, incident ids and the like are UUIDs whose digit groups
/// joined by dashes are sometimes Luhn-valid (about one UUIDv7 in 750), so
/// without this they would now and then be redacted as card numbers.
fn uuid_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let mut spans = Vec::new();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        let boundary_before = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let boundary_after = bytes.get(i + 36).is_none_or(|b| !b.is_ascii_alphanumeric());
        let mut at = i;
        let mut shaped = boundary_before && boundary_after;
        for (n, len) in SHAPE.iter().enumerate() {
            if !shaped {
                break;
            }
            shaped = bytes[at..at + len].iter().all(u8::is_ascii_hexdigit);
            at += len;
            if n < 4 {
                shaped = shaped && bytes[at] == b'-';
                at += 1;
            }
        }
        if shaped {
            spans.push((i, i + 36));
            i += 36;
        } else {
            i += 1;
        }
    }
    spans
}

pub(crate) fn redact_card_numbers(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let uuids = uuid_spans(bytes);
    let in_uuid = |i: usize| uuids.iter().find(|(start, end)| i >= *start && i < *end);
    // Runs of digit groups joined by single spaces or dashes.
    let mut runs: Vec<Vec<Group>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&(_, end)) = in_uuid(i) {
            i = end;
            continue;
        }
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut run = Vec::new();
        loop {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            run.push(Group {
                start,
                end: i,
                digits: bytes[start..i].iter().map(|b| b - b'0').collect(),
            });
            let joined = i + 1 < bytes.len()
                && matches!(bytes[i], b' ' | b'-')
                && bytes[i + 1].is_ascii_digit()
                && in_uuid(i + 1).is_none();
            if !joined {
                break;
            }
            i += 1;
        }
        runs.push(run);
    }
    // Within each run, find the widest spans of whole groups that are card
    // numbers.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for run in &runs {
        let mut first = 0;
        while first < run.len() {
            let mut found = None;
            let mut digits: Vec<u8> = Vec::new();
            for (last, group) in run.iter().enumerate().skip(first) {
                digits.extend_from_slice(&group.digits);
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && luhn_valid(&digits) {
                    found = Some(last);
                }
            }
            match found {
                Some(last) => {
                    spans.push((run[first].start, run[last].end));
                    first = last + 1;
                }
                None => first += 1,
            }
        }
    }
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end) in spans {
        // Spans start and end on ASCII digits, so they are char boundaries.
        out.push_str(s.get(at..start)?);
        out.push_str(REDACTED_CARD);
        at = end;
    }
    out.push_str(s.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: Value, expected: Value) {
        let Value::Object(mut map) = input else {
            panic!("test input must be an object")
        };
        sanitize_details(&mut map);
        assert_eq!(Value::Object(map), expected);
    }

    #[test]
    fn secret_keys_are_recognised_and_harmless_facts_kept() {
        for secret in [
            "password",
            "new_password",
            "Password",
            "passwordHash",
            "token",
            "access_token",
            "refreshToken",
            "client_secret",
            "Authorization",
            "set-cookie",
            "x-api-key",
            "apiKey",
            "private_key",
            "privateKey",
            "data_key",
            "key",
            "key_material",
            "totp_code",
            "otp",
            "session_key",
            "credentials",
        ] {
            assert!(is_secret_key(secret), "{secret} should be secret");
        }
        for harmless in [
            "token_id",
            "key_id",
            "keyId",
            "master_key_version",
            "password_changed_at",
            "secret_name",
            "account",
            "role",
            "public_key_fingerprint",
            "monkey",
            "tokenizer_mode",
            "attempts",
            "",
        ] {
            assert!(!is_secret_key(harmless), "{harmless} should be kept");
        }
    }

    #[test]
    fn details_are_redacted_at_every_depth() {
        check(
            json!({
                "user": "ann",
                "password": "hunter2",
                "nested": {"apiKey": "abc", "list": [{"token": 1}, "fine"]},
                "header": "Bearer eyJhbGciOi",
                "pem": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
                "token_id": "tok_123",
                "cookie": null,
            }),
            json!({
                "user": "ann",
                "password": REDACTED,
                "nested": {"apiKey": REDACTED, "list": [{"token": REDACTED}, "fine"]},
                "header": REDACTED,
                "pem": REDACTED,
                "token_id": "tok_123",
                "cookie": null,
            }),
        );
    }

    #[test]
    fn uuids_are_never_taken_for_card_numbers() {
        // The digits `7462-8156-8036` of this UUIDv7 are Luhn-valid: without
        // the UUID rule they would be redacted.
        let id = "01a2149c-5ad2-7462-8156-8036ba2f4be3";
        assert!(redact_card_numbers(&format!("x{id}")).is_some());
        assert_eq!(redact_card_numbers(id), None);
        assert_eq!(redact_card_numbers(&format!("incident:{id}")), None);
        // A card number beside a UUID is still found.
        let both = format!("{id} 4111 1111 1111 1111");
        assert_eq!(
            redact_card_numbers(&both),
            Some(format!("{id} {REDACTED_CARD}"))
        );
    }

    #[test]
    fn card_numbers_are_found_in_text_and_numbers() {
        check(
            json!({
                "note": "paid with 4111 1111 1111 1111 today",
                "dashed": "5555-5555-5555-4444",
                "plain": "378282246310005",
                "number": 4_012_888_888_881_881_u64,
                "two": "4111111111111111 and 5105105105105100",
                "glued": "4111111111111111 7",
            }),
            json!({
                "note": "paid with [REDACTED CARD NUMBER] today",
                "dashed": REDACTED_CARD,
                "plain": REDACTED_CARD,
                "number": REDACTED_CARD,
                "two": "[REDACTED CARD NUMBER] and [REDACTED CARD NUMBER]",
                "glued": "[REDACTED CARD NUMBER] 7",
            }),
        );
    }

    #[test]
    fn ordinary_numbers_are_left_alone() {
        let untouched = json!({
            "not_luhn": "4111 1111 1111 1112",
            "short": "411111111111",
            "date": "2025-03-01 12:00:00",
            "phone": "+1 555 123 4567",
            "count": 1_234_567_890_123_u64,
            "uuid": "0190f5c2-7d3a-7b3e-9a1b-411111111111",
            "unicode": "caf\u{e9} 12",
            "too_long": "41111111111111111111111",
        });
        check(untouched.clone(), untouched);
    }

    #[test]
    fn luhn_matches_known_vectors() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn_valid(&digits("79927398713")));
        assert!(!luhn_valid(&digits("79927398710")));
        assert!(luhn_valid(&digits("4111111111111111")));
    }
}
