//! Cron expressions of scheduled flows (5 fields, or 6 with seconds), read
//! by `croner`, with IANA time zones from `chrono-tz`.

use std::str::FromStr as _;

use croner::Cron;
use time::OffsetDateTime;

/// Parses a cron expression.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("not a valid cron expression: {e}"))
}

/// The first time after `after` at which the expression fires in `timezone`.
pub fn next_after(
    expr: &str,
    timezone: &str,
    after: OffsetDateTime,
) -> Result<OffsetDateTime, String> {
    let cron = parse_cron(expr)?;
    let tz = chrono_tz::Tz::from_str(timezone).map_err(|e| e.to_string())?;
    let secs = after.unix_timestamp();
    let start = chrono::DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| "time out of range".to_owned())?
        .with_timezone(&tz);
    let next = cron
        .find_next_occurrence(&start, false)
        .map_err(|e| e.to_string())?;
    OffsetDateTime::from_unix_timestamp(next.timestamp()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_fire_times_follow_the_time_zone() {
        // 2026-01-05 is a Monday; 09:00 in Paris is 08:00 UTC in winter.
        let after = time::macros::datetime!(2026-01-05 00:00 UTC);
        let next = next_after("0 9 * * MON-FRI", "Europe/Paris", after).unwrap();
        assert_eq!(next, time::macros::datetime!(2026-01-05 08:00 UTC));
        assert!(parse_cron("61 * * * *").is_err());
    }
}
