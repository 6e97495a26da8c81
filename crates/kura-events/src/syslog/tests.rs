use super::*;
use crate::StoredEvent;
use crate::export::export_record;
use kura_types::{Action, Actor, Outcome, SecurityEvent, TeamId};
use serde_json::json;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const BOM: &str = "\u{feff}";

fn parse_ok(input: &str) -> SyslogMessage {
    match parse(input.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("{input:?} should parse: {e}"),
    }
}

/// Checks that `input` is refused for `reason` with a message containing
/// `needle`.
fn check_refused(input: &[u8], reason: RejectReason, needle: &str) {
    let err = parse(input).expect_err(&String::from_utf8_lossy(input));
    assert_eq!(err.reason(), reason, "{err}");
    assert!(err.to_string().contains(needle), "{err} lacks {needle:?}");
}

#[test]
fn rfc5424_example_1_bom_and_no_structured_data() {
    let m = parse_ok(&format!(
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - {BOM}'su root' failed for lonvick on /dev/pts/8"
    ));
    assert_eq!((m.facility, m.severity), (4, 2));
    assert_eq!(m.timestamp, Some(datetime!(2003-10-11 22:14:15.003 UTC)));
    assert_eq!(m.hostname.as_deref(), Some("mymachine.example.com"));
    assert_eq!(m.app_name.as_deref(), Some("su"));
    assert_eq!(m.procid, None);
    assert_eq!(m.msgid.as_deref(), Some("ID47"));
    assert!(m.structured_data.is_empty());
    assert_eq!(
        m.msg.as_deref(),
        Some("'su root' failed for lonvick on /dev/pts/8")
    );
}

#[test]
fn rfc5424_example_2_offset_and_microseconds() {
    let m = parse_ok(
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
    );
    assert_eq!((m.facility, m.severity), (20, 5));
    assert_eq!(
        m.timestamp,
        Some(datetime!(2003-08-24 05:14:15.000003 -07:00))
    );
    assert_eq!(m.hostname.as_deref(), Some("192.0.2.1"));
    assert_eq!(m.procid.as_deref(), Some("8710"));
    assert_eq!(m.msgid, None);
    assert_eq!(m.msg.as_deref(), Some("%% It's time to make the do-nuts."));
}

#[test]
fn rfc5424_examples_3_and_4_structured_data() {
    let sd = r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#;
    let m = parse_ok(&format!(
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {sd} {BOM}An application event log entry..."
    ));
    assert_eq!(m.structured_data.len(), 1);
    let e = &m.structured_data[0];
    assert_eq!(e.id, "exampleSDID@32473");
    assert_eq!(
        e.params,
        vec![
            ("iut".to_owned(), "3".to_owned()),
            ("eventSource".to_owned(), "Application".to_owned()),
            ("eventID".to_owned(), "1011".to_owned()),
        ]
    );
    assert_eq!(m.msg.as_deref(), Some("An application event log entry..."));

    let m = parse_ok(&format!(
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {sd}[examplePriority@32473 class=\"high\"]"
    ));
    assert_eq!(m.structured_data.len(), 2);
    assert_eq!(
        m.element("examplePriority@32473")
            .and_then(|e| e.param("class")),
        Some("high")
    );
    assert_eq!(m.msg, None);
}

#[test]
fn param_values_unescape_only_quote_backslash_and_bracket() {
    let m = parse_ok(r#"<13>1 - - - - - [x@1 a="q\"b\\s\]e" b="\n\x" c="" d="ü]"]"#);
    let e = m.element("x@1").unwrap();
    assert_eq!(e.param("a"), Some(r#"q"b\s]e"#));
    assert_eq!(e.param("b"), Some(r"\n\x"), "other escapes stay literal");
    assert_eq!(e.param("c"), Some(""));
    assert_eq!(e.param("d"), Some("ü]"));
    assert_eq!(m.timestamp, None);
}

#[test]
fn malformed_messages_name_what_is_wrong() {
    use RejectReason::*;
    let cases: &[(&[u8], RejectReason, &str)] = &[
        (b"hello", Header, "<PRI>"),
        (b"<192>1 - - - - - -", Header, "PRI"),
        (b"<013>1 - - - - - -", Header, "leading zeros"),
        (b"<13> - - - - - -", Header, "VERSION is missing"),
        (b"<13>Oct 11 22:14:15 host su: x", Header, "RFC 3164"),
        (b"<13>2 - - - - - -", Header, "VERSION 2"),
        (b"<13>1  - - - - -", Header, "TIMESTAMP is empty"),
        (b"<13>1 - - - - -", Header, "after MSGID"),
        (
            b"<13>1 - - - - ID_THAT_IS_MUCH_LONGER_THAN_32_CHARS -",
            Header,
            "MSGID",
        ),
        (b"<13>1 - h\xc3\xa9 - - - -", Header, "printable US-ASCII"),
        (b"<13>1 - - - - - - \xff\xfe", InvalidUtf8, "offset 18"),
        (b"<13>1 2025-13-01T00:00:00Z - - - - -", Timestamp, "month"),
        (b"<13>1 2025-02-30T00:00:00Z - - - - -", Timestamp, "date"),
        (
            b"<13>1 2025-01-01T00:00:60Z - - - - -",
            Timestamp,
            "time of day",
        ),
        (b"<13>1 2025-01-01t00:00:00Z - - - - -", Timestamp, "YYYY"),
        (b"<13>1 2025-01-01T00:00:00 - - - - -", Timestamp, "`Z`"),
        (
            b"<13>1 2025-01-01T00:00:00.1234567Z - - - - -",
            Timestamp,
            "1 to 6",
        ),
        (
            b"<13>1 2025-01-01T00:00:00+25:00 - - - - -",
            Timestamp,
            "offset",
        ),
        (b"<13>1 - - - - - x", StructuredData, "`-` or `[`"),
        (b"<13>1 - - - - - -x", StructuredData, "followed by a space"),
        (
            b"<13>1 - - - - - [a b=\"c]",
            StructuredData,
            "no closing quote",
        ),
        (b"<13>1 - - - - - [a b=c]", StructuredData, "`=\"`"),
        (b"<13>1 - - - - - [a][a]", StructuredData, "twice"),
        (
            b"<13>1 - - - - - [a@x]",
            StructuredData,
            "enterprise number",
        ),
        (b"<13>1 - - - - - []", StructuredData, "SD-ID"),
        (
            b"<13>1 - - - - - [a  b=\"c\"]",
            StructuredData,
            "PARAM-NAME",
        ),
        (
            b"<13>1 - - - - - [a b=\"c\"",
            StructuredData,
            "expected a space or `]`",
        ),
        (
            b"<13>1 - - - - - [a b=\"c\"]x",
            StructuredData,
            "followed by a space",
        ),
    ];
    for (input, reason, needle) in cases {
        check_refused(input, *reason, needle);
    }
}

fn decode_all(decoder: &mut FrameDecoder) -> Result<Vec<Frame>, SyslogError> {
    let mut out = Vec::new();
    while let Some(f) = decoder.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn frames_split_and_join_across_reads() {
    let stream = [frame("<13>1 - - - - - - a"), frame("<13>1 - - - - - - bb")].concat();
    // Every split point, including inside the length field.
    for cut in 0..=stream.len() {
        let mut d = FrameDecoder::new(1024);
        d.push(&stream[..cut]);
        let mut frames = decode_all(&mut d).unwrap();
        d.push(&stream[cut..]);
        frames.extend(decode_all(&mut d).unwrap());
        assert_eq!(
            frames,
            vec![
                Frame::Message(b"<13>1 - - - - - - a".to_vec()),
                Frame::Message(b"<13>1 - - - - - - bb".to_vec()),
            ],
            "cut at {cut}"
        );
        assert!(d.is_idle());
    }
}

#[test]
fn non_octet_counted_streams_are_refused() {
    for (stream, needle) in [
        (&b"<13>1 - - - - - - hi\n"[..], "`<`"),
        (b"0 ", "zero"),
        (b"012 x", "start with 0"),
        (b"12\n<13>1 - -", "one space"),
        (b"x", "decimal"),
        (b"123456789 ", "more than 8 digits"),
        (b"99999999 ", "implausible"),
    ] {
        let mut d = FrameDecoder::new(64);
        d.push(stream);
        let err = decode_all(&mut d).unwrap_err();
        assert_eq!(err.reason(), RejectReason::Framing);
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn oversized_frames_are_skipped_without_buffering() {
    let big = "x".repeat(100);
    let stream = [
        format!("100 {big}").into_bytes(),
        frame("<13>1 - - - - - - ok"),
    ]
    .concat();
    let mut d = FrameDecoder::new(64);
    let mut frames = Vec::new();
    for chunk in stream.chunks(7) {
        d.push(chunk);
        frames.extend(decode_all(&mut d).unwrap());
        assert!(d.buffered() <= 64 + 8 + 7);
    }
    assert_eq!(
        frames,
        vec![
            Frame::Oversized { len: 100 },
            Frame::Message(b"<13>1 - - - - - - ok".to_vec()),
        ]
    );
}

fn now() -> OffsetDateTime {
    datetime!(2026-05-01 12:00:00 UTC)
}

fn ingest_str(input: &str) -> Result<SecurityEvent, SyslogError> {
    ingest(
        input.as_bytes(),
        &IngestPolicy::default(),
        &Provenance::at(now()),
    )
}

#[test]
fn normalisation_maps_actor_action_outcome_and_details() {
    let e = ingest_str(
        r#"<36>1 2026-05-01T11:59:00Z fw1 pf 77 BLOCK [kura@32473 action="edge.firewall.blocked" outcome="denied" src="192.0.2.9" target="port:22" team="someone-else"][origin ip="10.0.0.1" ip="10.0.0.2"] blocked 192.0.2.9
"#,
    )
    .unwrap();
    assert_eq!(e.time, datetime!(2026-05-01 11:59:00 UTC));
    assert_eq!(e.actor.key(), "system:fw1/pf");
    assert_eq!(e.action.as_str(), "edge.firewall.blocked");
    assert_eq!(e.outcome, Outcome::Denied);
    assert_eq!(e.source, Some("192.0.2.9".parse().unwrap()));
    assert_eq!(e.target.as_deref(), Some("port:22"));
    assert_eq!(e.team, None, "a syslog sender never writes into a team");
    assert_eq!(e.details["severity"], json!("warning"));
    assert_eq!(e.details["facility"], json!("auth"));
    assert_eq!(e.details["message"], json!("blocked 192.0.2.9"));
    assert_eq!(e.details["msgid"], json!("BLOCK"));
    assert_eq!(
        e.details["structured_data"]["origin"]["ip"],
        json!(["10.0.0.1", "10.0.0.2"])
    );
    assert_eq!(
        e.details["structured_data"]["kura@32473"]["team"],
        json!("someone-else")
    );
    assert_eq!(e.details["received_at"], json!("2026-05-01T12:00:00Z"));

    // MSGID as the action, then the default.
    let e = ingest_str("<13>1 - h a - edge.waf.blocked - x").unwrap();
    assert_eq!(e.action.as_str(), "edge.waf.blocked");
    assert_eq!(e.time, now(), "NILVALUE time is the receive time");
    assert_eq!(e.outcome, Outcome::Success);
    let e = ingest_str("<13>1 - - - - ID47 -").unwrap();
    assert_eq!(e.action.as_str(), DEFAULT_ACTION);
    assert_eq!(e.actor.key(), "system:-/-");
    assert!(!e.details.contains_key("message"));
}

#[test]
fn invalid_kura_parameters_and_far_timestamps_are_refused() {
    use RejectReason::*;
    for (input, reason, needle) in [
        (
            r#"<13>1 - - - - - [kura@32473 action="Edge.Blocked"]"#,
            StructuredData,
            "not a valid event action",
        ),
        (
            r#"<13>1 - - - - - [kura@32473 outcome="maybe"]"#,
            StructuredData,
            "outcome",
        ),
        (
            r#"<13>1 - - - - - [kura@32473 src="not-an-ip"]"#,
            StructuredData,
            "not an IP address",
        ),
        (
            "<13>1 2026-05-01T12:10:01Z - - - - -",
            Timestamp,
            "601 s ahead",
        ),
        ("<13>1 2026-04-30T11:59:59Z - - - - -", Timestamp, "old"),
    ] {
        let err = ingest_str(input).unwrap_err();
        assert_eq!(err.reason(), reason, "{input}: {err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    // The window's edges are inside it.
    assert!(ingest_str("<13>1 2026-05-01T12:10:00Z - - - - -").is_ok());
    assert!(ingest_str("<13>1 2026-04-30T12:00:00Z - - - - -").is_ok());
    // And it is configurable.
    let strict = IngestPolicy {
        max_future: Duration::ZERO,
        ..IngestPolicy::default()
    };
    assert!(
        ingest(
            b"<13>1 2026-05-01T12:00:01Z - - - - -",
            &strict,
            &Provenance::at(now())
        )
        .is_err()
    );
    let small = IngestPolicy {
        max_frame_bytes: 10,
        ..IngestPolicy::default()
    };
    let err = ingest(b"<13>1 - - - - - -", &small, &Provenance::at(now())).unwrap_err();
    assert_eq!(err.reason(), Oversized);
}

/// A small deterministic generator, so the round-trip test covers many
/// awkward values without a property-testing dependency.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", " ", "\"", "\\", "]", "[", "=", "\\]", "ü", "日本", "\u{feff}", "-", "\n",
            "\t", "}", "{", "'", "@", "x y",
        ];
        let n = self.next() % 12;
        (0..n).map(|_| self.pick(PIECES)).collect()
    }
}

fn stored(seq: u64, event: SecurityEvent) -> StoredEvent {
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    StoredEvent { seq, hash, event }
}

#[test]
fn format_then_parse_round_trips_every_field() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let actions = ["auth.signin.failed", "edge.waf.blocked", "data.export"];
    for i in 0..500u64 {
        let outcome = [Outcome::Success, Outcome::Failure, Outcome::Denied][(i % 3) as usize];
        let micros = i64::try_from(g.next() % 86_400_000_000).unwrap();
        let mut event = SecurityEvent::new(
            now() - Duration::microseconds(micros),
            Actor::Account { id: g.text() },
            Action::parse(g.pick(&actions)).unwrap(),
            outcome,
        )
        .with_detail("note", g.text())
        .with_detail("nested", json!({"k": g.text(), "n": i}));
        if i % 2 == 0 {
            event = event
                .with_team(TeamId::new())
                .with_target(g.text())
                .with_user_agent(g.text())
                .with_request_id(g.text())
                .with_source(if i % 4 == 0 {
                    "192.0.2.1".parse().unwrap()
                } else {
                    "2001:db8::1".parse().unwrap()
                });
        }
        let format = ExportFormat {
            hostname: "kura.example".into(),
            ..ExportFormat::default()
        };
        let stored = stored(i + 1, event.clone());
        let line = format_event(&stored, &format).unwrap();
        let m = parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        let sd = m.element(KURA_SD_ID).unwrap();
        assert_eq!(sd.param("seq"), Some(&*(i + 1).to_string()));
        assert_eq!(sd.param("hash"), Some(&*hex::encode(stored.hash)));
        assert_eq!(sd.param("id"), Some(&*event.id.to_string()));
        assert_eq!(sd.param("action"), Some(event.action.as_str()));
        assert_eq!(sd.param("outcome"), Some(event.outcome.as_str()));
        assert_eq!(sd.param("actor"), Some(&*event.actor.key()), "{line}");
        assert_eq!(sd.param("target"), event.target.as_deref(), "{line}");
        assert_eq!(sd.param("user_agent"), event.user_agent.as_deref());
        assert_eq!(sd.param("request_id"), event.request_id.as_deref());
        assert_eq!(
            sd.param("team").map(str::to_owned),
            event.team.map(|t| t.to_string())
        );
        assert_eq!(m.timestamp, Some(event.time), "microsecond precision");
        assert_eq!(m.msgid.as_deref(), Some(event.action.as_str()));
        assert_eq!(m.hostname.as_deref(), Some("kura.example"));
        assert_eq!(m.app_name.as_deref(), Some("kura"));
        assert_eq!(m.facility, 10);
        // MSG is the export record every sink writes, byte for byte.
        assert_eq!(m.msg, Some(export_record(&stored).unwrap()));
        let record: serde_json::Value = serde_json::from_str(m.msg.as_deref().unwrap()).unwrap();
        assert_eq!(
            SecurityEvent::from_json(record["event"].to_string().as_bytes()).unwrap(),
            event
        );

        // Kura can ingest its own export: the element describes the event.
        let back = normalize(
            parse_ok(&line),
            &IngestPolicy::default(),
            &Provenance::at(now()),
        )
        .unwrap();
        assert_eq!(back.action, event.action);
        assert_eq!(back.outcome, event.outcome);
        assert_eq!(back.source, event.source);
        assert_eq!(back.target, event.target);
        assert_eq!(back.time, event.time);

        // And the frame decodes back to the line.
        let mut d = FrameDecoder::new(64 * 1024);
        d.push(&frame(&line));
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Message(line.into_bytes()))
        );
    }
}

#[test]
fn escaping_covers_exactly_quote_backslash_and_bracket() {
    assert_eq!(escape_param_value(r#"a"b\c]d[e=f"#), r#"a\"b\\c\]d[e=f"#);
    assert_eq!(escape_param_value("日本 \u{feff}"), "日本 \u{feff}");
}

#[test]
fn exports_pick_a_fitting_severity() {
    let event = |action: &str, outcome| {
        SecurityEvent::new(
            now(),
            Actor::System {
                component: "kms".into(),
            },
            Action::parse(action).unwrap(),
            outcome,
        )
    };
    let line = |e: SecurityEvent| format_event(&stored(9, e), &ExportFormat::default()).unwrap();
    let failed = line(event("keys.rotated", Outcome::Failure));
    assert!(
        failed.starts_with(
            "<84>1 2026-05-01T12:00:00.000000Z - kura - keys.rotated [kura@32473 seq=\"9\" hash=\""
        ),
        "{failed}"
    );
    assert!(line(event("keys.rotated", Outcome::Success)).starts_with("<85>1 "));
    assert!(line(event("detect.alert.raised", Outcome::Success)).starts_with("<81>1 "));
    let ingested = ingest_str("<10>1 - h a - - - critical thing").unwrap();
    assert!(line(ingested).starts_with("<82>1 "));
}

#[test]
fn reject_reasons_have_stable_names_and_indices() {
    let names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "framing",
            "oversized",
            "invalid_utf8",
            "header",
            "timestamp",
            "structured_data"
        ]
    );
    for (i, r) in RejectReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
}
