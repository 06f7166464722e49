//! Reading one key's value, from a TOML file or from a Kafka request's string, with the
//! same rules and the same error messages either way.

use toml::Value;

use crate::choice::Choice;
use crate::error::ConfigErrorKind;

/// A value as it arrived: typed from TOML, or a string from a Kafka request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    Toml(&'a Value),
    Text(&'a str),
}

impl Raw<'_> {
    /// How an error message shows the value: `string "three"`, `12`, `boolean true`, …
    /// (a Kafka string shows quoted, without a type: every Kafka value is a string).
    pub(crate) fn describe(self) -> String {
        match self {
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(v) => describe(v),
        }
    }
}

/// How an error message shows a TOML value.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Float(x) => format!("float {x}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(a) if a.is_empty() => "an empty list".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

/// The allowed range of an integer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) min: i64,
    pub(crate) max: i64,
    /// Whether -1 is also allowed, meaning "unlimited".
    pub(crate) unlimited: bool,
}

impl Bounds {
    pub(crate) const fn between(min: i64, max: i64) -> Self {
        Bounds {
            min,
            max,
            unlimited: false,
        }
    }

    pub(crate) const fn at_least(min: i64) -> Self {
        Bounds::between(min, i64::MAX)
    }

    /// -1 (unlimited) or `min..=i64::MAX`.
    pub(crate) const fn unlimited_or_at_least(min: i64) -> Self {
        Bounds {
            min,
            max: i64::MAX,
            unlimited: true,
        }
    }

    fn contains(self, v: i64) -> bool {
        (self.unlimited && v == -1) || (self.min..=self.max).contains(&v)
    }

    /// `an integer ≥ 1`, `an integer from 0 to 65535`, `-1 (unlimited) or an integer ≥ 1`.
    /// An upper bound that is only the field's width (a Kafka INT32 or INT64) is mentioned
    /// only to a value above it.
    pub(crate) fn describe(self, found: Option<i64>) -> String {
        let width_only = self.max == i64::MAX || self.max == INT32_MAX;
        let range = if width_only && found.is_none_or(|v| v <= self.max) {
            format!("an integer ≥ {}", self.min)
        } else {
            format!("an integer from {} to {}", self.min, self.max)
        };
        if self.unlimited {
            format!("-1 (unlimited) or {range}")
        } else {
            range
        }
    }
}

/// The largest value of a Kafka INT32 setting.
pub(crate) const INT32_MAX: i64 = i32::MAX as i64;

/// An integer within `bounds`, converted to the field's type.
pub(crate) fn int<T: TryFrom<i64>>(
    key: &str,
    raw: Raw<'_>,
    bounds: Bounds,
) -> Result<T, ConfigErrorKind> {
    let invalid = |v: Option<i64>| ConfigErrorKind::Invalid {
        key: key.to_owned(),
        expected: bounds.describe(v),
        found: raw.describe(),
    };
    let v = match raw {
        Raw::Toml(Value::Integer(i)) => *i,
        Raw::Text(s) => s.trim().parse::<i64>().map_err(|_| invalid(None))?,
        Raw::Toml(_) => return Err(invalid(None)),
    };
    if !bounds.contains(v) {
        return Err(invalid(Some(v)));
    }
    T::try_from(v).map_err(|_| invalid(Some(v)))
}

/// A boolean (`true`/`false`; from a Kafka string also case-insensitively, as Kafka does).
pub(crate) fn boolean(key: &str, raw: Raw<'_>) -> Result<bool, ConfigErrorKind> {
    match raw {
        Raw::Toml(Value::Boolean(b)) => Ok(*b),
        Raw::Text(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Raw::Text(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ConfigErrorKind::Invalid {
            key: key.to_owned(),
            expected: "true or false".to_owned(),
            found: raw.describe(),
        }),
    }
}

/// A string (any TOML string, or a Kafka value as is).
pub(crate) fn string<'a>(
    key: &str,
    raw: Raw<'a>,
    expected: &str,
) -> Result<&'a str, ConfigErrorKind> {
    match raw {
        Raw::Toml(Value::String(s)) => Ok(s),
        Raw::Text(s) => Ok(s),
        Raw::Toml(_) => Err(ConfigErrorKind::Invalid {
            key: key.to_owned(),
            expected: expected.to_owned(),
            found: raw.describe(),
        }),
    }
}

/// One of a key's named choices.
pub(crate) fn choice<C: Choice>(key: &str, raw: Raw<'_>) -> Result<C, ConfigErrorKind> {
    let expected = format!("one of {}", C::allowed());
    let name = string(key, raw, &expected)?;
    if let Some(c) = C::from_name(name) {
        return Ok(c);
    }
    if C::UNSUPPORTED.contains(&name) {
        return Err(ConfigErrorKind::Unsupported {
            key: key.to_owned(),
            what: format!("{name:?}"),
            instead: C::allowed(),
        });
    }
    Err(ConfigErrorKind::NotAllowed {
        key: key.to_owned(),
        value: format!("{name:?}"),
        allowed: C::allowed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choice::FlushMode;

    /// Guards the wording of the three error kinds a single value can produce.
    #[test]
    fn messages() {
        let three = Value::String("three".into());
        let e = int::<i32>("num.partitions", Raw::Toml(&three), Bounds::at_least(1));
        assert_eq!(
            e.unwrap_err().to_string(),
            r#"key "num.partitions": expected an integer ≥ 1, found string "three""#
        );
        let e = int::<i64>(
            "retention.ms",
            Raw::Text("-5"),
            Bounds::unlimited_or_at_least(1),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            r#"key "retention.ms": expected -1 (unlimited) or an integer ≥ 1, found "-5""#
        );
        let e = choice::<FlushMode>("flush", Raw::Text("sometimes"));
        assert_eq!(
            e.unwrap_err().to_string(),
            r#"key "flush": "sometimes" is not allowed; use one of always, interval, never"#
        );
        assert_eq!(
            int::<u8>("k", Raw::Text(" 7 "), Bounds::between(0, 9)),
            Ok(7)
        );
        assert_eq!(
            int::<i64>("k", Raw::Text("-1"), Bounds::unlimited_or_at_least(1)),
            Ok(-1)
        );
        assert_eq!(boolean("k", Raw::Text("TRUE")), Ok(true));
        let e = int::<i32>(
            "node.id",
            Raw::Text("3000000000"),
            Bounds::between(0, INT32_MAX),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            r#"key "node.id": expected an integer from 0 to 2147483647, found "3000000000""#
        );
    }
}
