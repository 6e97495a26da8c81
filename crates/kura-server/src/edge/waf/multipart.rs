//! Splits a buffered `multipart/form-data` body (RFC 7578) into parts, far
//! enough for inspection: each part's field name, file name and content.
//!
//! It is deliberately lenient where handlers' parsers are strict (a part
//! without headers, a missing closing delimiter, bare `\n` line ends): a
//! part the WAF cannot read must not become a part the handler reads
//! uninspected, so anything after a delimiter counts as a part, and the
//! content runs to the next delimiter whatever comes between.

/// One part.
#[derive(Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` of its `Content-Disposition`.
    pub name: Option<String>,
    /// The `filename` (or `filename*`) of its `Content-Disposition`.
    pub filename: Option<String>,
    /// Its content (a file's bytes, or a field's value).
    pub content: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The parts of `body`, delimited by `--{boundary}`.
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut out = Vec::new();
    let Some(mut at) = find(body, delimiter, 0) else {
        return out;
    };
    loop {
        let start = at + delimiter.len();
        if body[start..].starts_with(b"--") {
            break;
        }
        let end = find(body, delimiter, start);
        let raw = &body[start..end.unwrap_or(body.len())];
        out.push(part(raw));
        match end {
            Some(e) => at = e,
            None => break,
        }
    }
    out
}

/// The `key=value` parameters after the disposition type; a value is a
/// token or a quoted string, in which `;` and escaped quotes are kept.
fn params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = v.chars().peekable();
    // Skip the disposition type.
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .trim_start_matches(';')
            .trim()
            .to_owned();
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ';')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.push((key, value));
    }
    out
}

/// Browsers write `"`, CR and LF in names and file names as `%22`, `%0D`
/// and `%0A`; the signatures see the characters.
fn unescape(v: &str) -> String {
    v.replace("%22", "\"")
        .replace("%0D", "\r")
        .replace("%0A", "\n")
}

fn trim_line_end(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn part(raw: &[u8]) -> Part<'_> {
    // The delimiter line's end, then headers up to an empty line.
    let raw = raw
        .strip_prefix(b"\r\n")
        .or_else(|| raw.strip_prefix(b"\n"))
        .unwrap_or(raw);
    let (head, content) = match find(raw, b"\r\n\r\n", 0) {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(raw, b"\n\n", 0) {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (&raw[..0], raw),
        },
    };
    let mut name = None;
    let mut filename = None;
    let head = String::from_utf8_lossy(head);
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for (pk, pv) in params(v) {
            match pk.to_ascii_lowercase().as_str() {
                "name" => name = Some(unescape(&pv)),
                "filename" | "filename*" => filename = Some(unescape(&pv)),
                _ => {}
            }
        }
    }
    Part {
        name,
        filename,
        content: trim_line_end(content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_files_and_sloppy_bodies_are_split() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello; world\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\nbytes\r\n--XyZ--\r\n";
        let p = parts(body, "XyZ");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name.as_deref(), Some("title"));
        assert_eq!(p[0].filename, None);
        assert_eq!(p[0].content, b"Hello; world");
        assert_eq!(p[1].filename.as_deref(), Some("a.txt"));
        assert_eq!(p[1].content, b"file\r\nbytes");
        // Bare line ends, no closing delimiter, a part without headers.
        let sloppy = b"--b\nContent-Disposition: form-data; name=q\n\nvalue\n--b\nno headers here";
        let p = parts(sloppy, "b");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name.as_deref(), Some("q"));
        assert_eq!(p[0].content, b"value");
        assert_eq!(p[1].name, None);
        assert_eq!(p[1].content, b"no headers here");
        assert!(parts(b"no delimiter at all", "b").is_empty());
        // Quoted values keep `;`, escaped quotes and browser escapes.
        let quoted = b"--b\r\nContent-Disposition: form-data; name=\"a; b \\\" c\"; filename=\"x%22y\"\r\n\r\nv\r\n--b--";
        let p = parts(quoted, "b");
        assert_eq!(p[0].name.as_deref(), Some("a; b \" c"));
        assert_eq!(p[0].filename.as_deref(), Some("x\"y"));
    }
}
