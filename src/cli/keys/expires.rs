//! Reading an expiry as gpg and sq take one: `2y`, `18m`, `6w`, `90d`, a date, or `never`.

use std::time::{Duration, SystemTime};

const DAY: u64 = 24 * 60 * 60;

/// When a key should expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    Never,
    /// This long from now (for a new key: from its creation).
    After(Duration),
    /// On this day, at midnight UTC.
    On(SystemTime),
}

impl std::str::FromStr for Expires {
    type Err = String;

    fn from_str(s: &str) -> Result<Expires, String> {
        let t = s.trim().to_ascii_lowercase();
        if t == "never" || t == "0" {
            return Ok(Expires::Never);
        }
        if let Ok(date) = chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d") {
            let midnight = date
                .and_hms_opt(0, 0, 0)
                .ok_or_else(|| format!("{s:?} is not a date"))?
                .and_utc();
            return Ok(Expires::On(SystemTime::from(midnight)));
        }
        let bad = || {
            format!(
                "{s:?} is not an expiry: give a count and a unit (2y, 18m, 6w, 90d: years, \
                 months of 30 days, weeks, days, as gpg reads them), a date (2027-06-30), \
                 or never"
            )
        };
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let days = match unit {
            "y" => 365,
            "m" => 30,
            "w" => 7,
            "d" => 1,
            _ => return Err(bad()),
        };
        // Longer than sequoia's 32-bit expiry field allows is a typo, not a plan.
        if n == 0 || n.saturating_mul(days) > 100 * 365 {
            return Err(format!(
                "{s:?}: an expiry must be between 1 day and 100 years"
            ));
        }
        Ok(Expires::After(Duration::from_secs(n * days * DAY)))
    }
}

impl Expires {
    /// The validity period of a key created at `now`; `None` never expires.
    ///
    /// # Errors
    /// A date that is not in the future.
    pub fn period(self, now: SystemTime) -> anyhow::Result<Option<Duration>> {
        match self {
            Expires::Never => Ok(None),
            Expires::After(d) => Ok(Some(d)),
            Expires::On(t) => match t.duration_since(now) {
                Ok(d) if !d.is_zero() => Ok(Some(d)),
                _ => anyhow::bail!("the expiry date is not in the future"),
            },
        }
    }

    /// The moment a key renewed at `now` expires; `None` never.
    ///
    /// # Errors
    /// A date that is not in the future.
    pub fn at(self, now: SystemTime) -> anyhow::Result<Option<SystemTime>> {
        Ok(self.period(now)?.map(|d| now + d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpg_style_expiries() {
        let day = Duration::from_secs(DAY);
        assert_eq!("2y".parse(), Ok(Expires::After(730 * day)));
        assert_eq!("18M".parse(), Ok(Expires::After(540 * day)));
        assert_eq!("6w".parse(), Ok(Expires::After(42 * day)));
        assert_eq!("90d".parse(), Ok(Expires::After(90 * day)));
        assert_eq!("never".parse(), Ok(Expires::Never));
        let Ok(Expires::On(t)) = "2030-01-01".parse::<Expires>() else {
            panic!("a date")
        };
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_893_456_000
        );
        for bad in ["", "y", "2x", "-1d", "0d", "500y", "2030-13-01"] {
            assert!(bad.parse::<Expires>().is_err(), "{bad}");
        }
        let now = SystemTime::now();
        assert!(Expires::On(now - day).period(now).is_err());
        assert_eq!(Expires::Never.at(now).unwrap(), None);
    }
}
