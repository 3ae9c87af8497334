//! Timestamps, bar frequencies and the as-of point in time.
//!
//! A [`Timestamp`] is whole seconds since the Unix epoch, UTC. Daily bars are stamped at
//! midnight UTC of their exchange-local trading date; intraday bars at their UTC open time.
//! Conversion between civil dates and day numbers follows the well-known proleptic Gregorian
//! algorithm (days from 1970-01-01), written here so the hot parsing path has no dependency.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Seconds in one day.
pub const DAY: i64 = 86_400;

/// Whole seconds since 1970-01-01T00:00:00Z. Serialised as `YYYY-MM-DD` at midnight UTC and
/// `YYYY-MM-DDTHH:MM:SSZ` otherwise, so JSON output reads as dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Timestamp(pub i64);

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(s: String) -> Result<Timestamp, String> {
        Timestamp::parse(&s).ok_or_else(|| {
            format!("'{s}' is not a time, expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
        })
    }
}

impl Timestamp {
    /// Midnight UTC of a civil date.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Timestamp {
        Timestamp(days_from_civil(year, month, day) * DAY)
    }

    /// The civil date (UTC) this timestamp falls on.
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0.div_euclid(DAY))
    }

    /// Whether the timestamp is exactly midnight UTC.
    pub fn is_midnight(self) -> bool {
        self.0.rem_euclid(DAY) == 0
    }

    /// `YYYY-MM-DD`.
    pub fn date_string(self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn datetime_string(self) -> String {
        let secs = self.0.rem_euclid(DAY);
        format!(
            "{}T{:02}:{:02}:{:02}Z",
            self.date_string(),
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    /// Formats as a date for daily data and as a date-time otherwise.
    pub fn display(self, frequency: Frequency) -> String {
        if frequency.is_daily() {
            self.date_string()
        } else {
            self.datetime_string()
        }
    }

    /// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn parse(text: &str) -> Option<Timestamp> {
        match parse_ts(text.as_bytes())? {
            ParsedTs::Date(t) | ParsedTs::DateTime(t) => Some(t),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_midnight() {
            f.write_str(&self.date_string())
        } else {
            f.write_str(&self.datetime_string())
        }
    }
}

/// The instant up to which data may be seen. Every panel query carries one.
///
/// A bar is visible as of `t` when it has *closed* by `t`: its open time plus its length is
/// at or before `t`. A daily bar dated `D` closes at the end of `D` (midnight UTC after it),
/// so `AsOf::end_of_day(D)` sees the bar of `D` and nothing later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AsOf(pub Timestamp);

impl AsOf {
    /// The end of a civil date: everything that closed on or before that date is visible.
    pub fn end_of_day(year: i32, month: u32, day: u32) -> AsOf {
        AsOf(Timestamp(Timestamp::from_ymd(year, month, day).0 + DAY))
    }

    /// The latest possible instant: all stored data is visible. For research on history
    /// that has no sealed future, e.g. `lim data show`.
    pub const LATEST: AsOf = AsOf(Timestamp(253_402_300_799)); // 9999-12-31T23:59:59Z

    /// Parses `YYYY-MM-DD` (end of that day) or `YYYY-MM-DDTHH:MM:SSZ` (that instant).
    pub fn parse(text: &str) -> Option<AsOf> {
        match parse_ts(text.as_bytes())? {
            ParsedTs::Date(t) => Some(AsOf(Timestamp(t.0 + DAY))),
            ParsedTs::DateTime(t) => Some(AsOf(t)),
        }
    }

    /// Whether a bar opening at `open` with the given frequency has closed by this instant.
    pub fn sees(self, open: Timestamp, frequency: Frequency) -> bool {
        open.0.saturating_add(frequency.seconds()) <= (self.0).0
    }
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == AsOf::LATEST {
            f.write_str("latest")
        } else {
            write!(f, "{}", Timestamp((self.0).0).datetime_string())
        }
    }
}

/// A bar length. Daily bars are trading days, whatever the calendar gap between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Frequency {
    /// Intraday bars of a whole number of seconds (300 for 5-minute bars).
    Intraday(u32),
    /// One bar per trading day.
    Daily,
}

impl Frequency {
    /// Five-minute bars.
    pub const MIN5: Frequency = Frequency::Intraday(300);
    /// Hourly bars.
    pub const HOUR: Frequency = Frequency::Intraday(3600);

    /// The nominal bar length in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Frequency::Intraday(s) => i64::from(s),
            Frequency::Daily => DAY,
        }
    }

    /// Whether bars are whole trading days.
    pub fn is_daily(self) -> bool {
        matches!(self, Frequency::Daily)
    }

    /// Bars per year for annualising statistics (252 trading days; intraday bars scaled by
    /// the bars in a 6.5 h session for equities-like data, 24 h otherwise is the caller's call).
    pub fn periods_per_year(self, bars_per_day: f64) -> f64 {
        match self {
            Frequency::Daily => 252.0,
            Frequency::Intraday(_) => 252.0 * bars_per_day.max(1.0),
        }
    }

    /// Bars per year of a time axis at this frequency, for annualising statistics: 252 for
    /// daily bars; for intraday bars, 252 times the axis's bars per trading day (its bars over
    /// the days it has bars on), so that a 24-hour market and a 6¼-hour session are each
    /// annualised by their own day.
    pub fn periods_per_year_of(self, times: &[Timestamp]) -> f64 {
        match self {
            Frequency::Daily => 252.0,
            Frequency::Intraday(_) => {
                let mut days = 0usize;
                let mut last = None;
                for t in times {
                    let day = t.0.div_euclid(DAY);
                    if last != Some(day) {
                        days += 1;
                        last = Some(day);
                    }
                }
                self.periods_per_year(times.len() as f64 / days.max(1) as f64)
            }
        }
    }

    /// Parses `1d`, `1h`, `5min`, `15m`, `30s`.
    pub fn parse(text: &str) -> Option<Frequency> {
        let t = text.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit())?;
        let (num, unit) = t.split_at(split);
        let n: u32 = if num.is_empty() { 1 } else { num.parse().ok()? };
        if n == 0 {
            return None;
        }
        let unit_secs = match unit {
            "d" | "day" | "daily" => return (n == 1).then_some(Frequency::Daily),
            "h" | "hour" | "hours" => 3600,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "s" | "sec" | "secs" => 1,
            _ => return None,
        };
        let secs = n.checked_mul(unit_secs)?;
        (secs < 86_400).then_some(Frequency::Intraday(secs))
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Frequency::Daily => f.write_str("1d"),
            Frequency::Intraday(s) if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            Frequency::Intraday(s) if s % 60 == 0 => write!(f, "{}min", s / 60),
            Frequency::Intraday(s) => write!(f, "{s}s"),
        }
    }
}

impl From<Frequency> for String {
    fn from(f: Frequency) -> String {
        f.to_string()
    }
}

impl TryFrom<String> for Frequency {
    type Error = String;
    fn try_from(s: String) -> Result<Frequency, String> {
        Frequency::parse(&s)
            .ok_or_else(|| format!("unknown frequency '{s}', expected e.g. 1d, 1h, 5min"))
    }
}

/// What a `ts` field held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParsedTs {
    Date(Timestamp),
    DateTime(Timestamp),
}

/// Parses the two accepted timestamp forms without allocating.
pub(crate) fn parse_ts(b: &[u8]) -> Option<ParsedTs> {
    fn digits(b: &[u8]) -> Option<u32> {
        let mut v = 0u32;
        for &c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    }
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let date = days_from_civil(year, month, day) * DAY;
    match b.len() {
        10 => Some(ParsedTs::Date(Timestamp(date))),
        20 if b[10] == b'T' && b[13] == b':' && b[16] == b':' && b[19] == b'Z' => {
            let (h, m, s) = (
                digits(&b[11..13])?,
                digits(&b[14..16])?,
                digits(&b[17..19])?,
            );
            if h > 23 || m > 59 || s > 59 {
                return None;
            }
            Some(ParsedTs::DateTime(Timestamp(
                date + i64::from(h * 3600 + m * 60 + s),
            )))
        }
        _ => None,
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intraday_bars_are_annualised_by_their_own_day() {
        // Two days of a 24-hour market, hourly; and two 6-bar sessions.
        let hours: Vec<Timestamp> = (0..48).map(|h| Timestamp(10 * DAY + h * 3600)).collect();
        assert_eq!(Frequency::HOUR.periods_per_year_of(&hours), 252.0 * 24.0);
        let session: Vec<Timestamp> = [3, 4]
            .iter()
            .flat_map(|d| (0..6).map(move |h| Timestamp(d * DAY + 10 * 3600 + h * 3600)))
            .collect();
        assert_eq!(Frequency::HOUR.periods_per_year_of(&session), 252.0 * 6.0);
        assert_eq!(Frequency::Daily.periods_per_year_of(&hours), 252.0);
        assert_eq!(Frequency::HOUR.periods_per_year_of(&[]), 252.0);
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for z in (-200_000..200_000).step_by(37) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn parses_both_forms_and_rejects_impossible_dates() {
        assert_eq!(
            Timestamp::parse("2020-02-29"),
            Some(Timestamp::from_ymd(2020, 2, 29))
        );
        assert_eq!(Timestamp::parse("2021-02-29"), None);
        let t = Timestamp::parse("2023-07-03T03:45:00Z").map(|t| t.datetime_string());
        assert_eq!(t.as_deref(), Some("2023-07-03T03:45:00Z"));
        assert_eq!(Timestamp::parse("2023-07-03 03:45:00"), None);
        assert_eq!(Timestamp::parse("2023-13-01"), None);
    }

    #[test]
    fn as_of_a_date_sees_that_days_bar_and_not_the_next() {
        let as_of = AsOf::parse("2020-06-30").unwrap_or(AsOf(Timestamp(0)));
        assert!(as_of.sees(Timestamp::from_ymd(2020, 6, 30), Frequency::Daily));
        assert!(!as_of.sees(Timestamp::from_ymd(2020, 7, 1), Frequency::Daily));
        // A 5-minute bar opening at 23:55 closes at midnight: visible; one at 23:56 is not.
        let t = Timestamp::from_ymd(2020, 6, 30).0;
        assert!(as_of.sees(Timestamp(t + DAY - 300), Frequency::MIN5));
        assert!(!as_of.sees(Timestamp(t + DAY - 299), Frequency::MIN5));
    }

    #[test]
    fn frequencies_parse_and_print() {
        for (s, f) in [
            ("1d", Frequency::Daily),
            ("1h", Frequency::HOUR),
            ("5min", Frequency::MIN5),
        ] {
            assert_eq!(Frequency::parse(s), Some(f));
            assert_eq!(f.to_string(), s);
        }
        assert_eq!(Frequency::parse("2d"), None);
        assert_eq!(Frequency::parse("0h"), None);
    }
}
