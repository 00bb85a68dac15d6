//! Wall-clock times in UTC as the logs and the status show them, without a date crate.

use std::time::SystemTime;

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `at` in UTC: (`2026-12-01`, `10:31:07`), and its milliseconds.
fn parts(at: SystemTime) -> (String, String, u32) {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(i64::try_from(days).unwrap_or(i64::MAX / 2));
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60),
        since.subsec_millis(),
    )
}

/// `at` in UTC: (`2026-12-01`, `10:31:07`).
pub fn utc(at: SystemTime) -> (String, String) {
    let (date, time, _) = parts(at);
    (date, time)
}

/// `at` as RFC 3339 in UTC, to the second: `2026-12-01T10:31:07Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let (date, time, _) = parts(at);
    format!("{date}T{time}Z")
}

/// `at` as RFC 3339 in UTC, to the millisecond: `2026-12-01T10:31:07.051Z`.
pub fn rfc3339_millis(at: SystemTime) -> String {
    let (date, time, millis) = parts(at);
    format!("{date}T{time}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_dates() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_796_121_067)), "2026-12-01T10:31:07Z");
        assert_eq!(
            rfc3339_millis(at(1_796_121_067) + Duration::from_millis(51)),
            "2026-12-01T10:31:07.051Z"
        );
        assert_eq!(utc(at(0)), ("1970-01-01".to_owned(), "00:00:00".to_owned()));
    }
}
