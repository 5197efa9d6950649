//! Dates: the `YYYY-MM-DD` calendar dates of `migration.since` and `migration.until`.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// A calendar date (proleptic Gregorian), as written `YYYY-MM-DD` in the job file.
///
/// Fields are ordered year, month, day so the derived ordering is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, 1 to 9999.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub day: u32,
}

/// Why a text is not a [`Date`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// The text is not shaped `YYYY-MM-DD`.
    #[error("expected a date written YYYY-MM-DD, such as 2020-01-31")]
    Format,
    /// The numbers do not name a day of the calendar (month 13, 30 February, year 0).
    #[error("{year:04}-{month:02}-{day:02} is not a calendar date")]
    NoSuchDay {
        /// The year written.
        year: i32,
        /// The month written.
        month: u32,
        /// The day written.
        day: u32,
    },
}

const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Date {
    /// A date, checked against the calendar.
    ///
    /// # Errors
    ///
    /// [`DateError::NoSuchDay`] when the numbers name no day (years run from 1 to 9999).
    pub fn new(year: i32, month: u32, day: u32) -> Result<Date, DateError> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month);
        if valid {
            Ok(Date { year, month, day })
        } else {
            Err(DateError::NoSuchDay { year, month, day })
        }
    }

    /// The date as IMAP `SEARCH` writes it (RFC 3501 `date`), e.g. `1-Jan-2020`.
    #[must_use]
    pub fn imap_format(&self) -> String {
        let month = usize::try_from(self.month)
            .ok()
            .and_then(|m| MONTH_NAMES.get(m.wrapping_sub(1)))
            .copied()
            .unwrap_or("???");
        format!("{}-{}-{}", self.day, month, self.year)
    }
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl FromStr for Date {
    type Err = DateError;

    /// Parses exactly `YYYY-MM-DD` (four, two and two digits).
    fn from_str(text: &str) -> Result<Date, DateError> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
        if !shaped {
            return Err(DateError::Format);
        }
        let number =
            |range: Range<usize>| text[range].parse::<u32>().map_err(|_| DateError::Format);
        let year = i32::try_from(number(0..4)?).map_err(|_| DateError::Format)?;
        Date::new(year, number(5..7)?, number(8..10)?)
    }
}

impl fmt::Display for Date {
    /// Writes `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}
