//! Configuration errors: one line each, naming the key and what it allows.
//!
//! An operator reads these at startup (`tern serve` prints the line and exits) and a Kafka
//! client reads them in the `error_message` of CreateTopics/AlterConfigs, so every message
//! says which key was wrong and what would have been accepted, and never spans lines.

use std::fmt;

use thiserror::Error;

/// What went wrong, without saying where the text came from.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read: {message}")]
    Read { message: String },
    /// The text is not valid TOML.
    #[error("invalid TOML at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A key that Tern does not know.
    #[error("unknown key \"{key}\"{}", Suggestion(suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<&'static str>,
    },
    /// A value of the wrong type or out of range.
    #[error("key \"{key}\": expected {expected}, found {found}")]
    Invalid {
        key: String,
        expected: String,
        found: String,
    },
    /// A value that is not one of the key's named choices.
    #[error("key \"{key}\": {value} is not allowed; use one of {allowed}")]
    NotAllowed {
        key: String,
        value: String,
        allowed: String,
    },
    /// A value Kafka accepts that Tern does not support yet.
    #[error("key \"{key}\": {what} is not supported yet; use {instead}")]
    Unsupported {
        key: String,
        what: String,
        instead: String,
    },
}

/// Renders ` (did you mean "x"?)` when there is a close known key.
struct Suggestion<'a>(&'a Option<&'static str>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, " (did you mean \"{s}\"?)"),
            None => Ok(()),
        }
    }
}

/// A configuration error: what went wrong and, for a file, which file.
///
/// Displays as one line, e.g. `tern.toml: unknown key "log.dir" (did you mean "log.dirs"?)`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    origin: Option<String>,
    kind: ConfigErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl From<ConfigErrorKind> for ConfigError {
    fn from(kind: ConfigErrorKind) -> Self {
        ConfigError { origin: None, kind }
    }
}

impl ConfigError {
    /// The same error, said to come from `origin` (a file name).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// The same error about a value, said of `key` (a broker key whose value was checked as
    /// the topic key it is the default of).
    pub fn said_of(mut self, key: &str) -> Self {
        match &mut self.kind {
            ConfigErrorKind::Invalid { key: k, .. }
            | ConfigErrorKind::NotAllowed { key: k, .. }
            | ConfigErrorKind::Unsupported { key: k, .. } => *k = key.to_string(),
            _ => {}
        }
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.kind
    }

    /// The file (or other source) the configuration came from, if known.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match &self.kind {
            ConfigErrorKind::Read { .. } | ConfigErrorKind::Syntax { .. } => None,
            ConfigErrorKind::UnknownKey { key, .. }
            | ConfigErrorKind::Invalid { key, .. }
            | ConfigErrorKind::NotAllowed { key, .. }
            | ConfigErrorKind::Unsupported { key, .. } => Some(key),
        }
    }

    /// A TOML parse error, reduced to one line with its position in `text`.
    pub(crate) fn syntax(text: &str, e: &toml::de::Error) -> Self {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let before = text.get(..at).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigErrorKind::Syntax {
            line,
            column,
            message,
        }
        .into()
    }
}

/// An unknown-key error, suggesting the closest of `known` if it is close enough to be a typo.
pub(crate) fn unknown_key(key: &str, known: &[&'static str]) -> ConfigErrorKind {
    ConfigErrorKind::UnknownKey {
        key: key.to_owned(),
        suggestion: suggest(key, known),
    }
}

/// The known key `key` was probably meant to be: the same key with or without Kafka's `log.`
/// prefix (broker vs topic names), else the nearest by edit distance if at most a third of
/// the key's length (at least 2, at most 3) edits away.
fn suggest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let prefixed = format!("log.{key}");
    let stripped = key.strip_prefix("log.");
    if let Some(k) = known
        .iter()
        .find(|k| **k == prefixed || Some(**k) == stripped)
    {
        return Some(k);
    }
    let limit = (key.chars().count() / 3).clamp(2, 3);
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the typo suggestions operators see for misspelt keys.
    #[test]
    fn suggestions() {
        let known = ["log.dirs", "log.retention.ms", "num.partitions", "flush"];
        assert_eq!(suggest("log.dir", &known), Some("log.dirs"));
        assert_eq!(suggest("num.partition", &known), Some("num.partitions"));
        assert_eq!(suggest("retention.ms", &known), Some("log.retention.ms"));
        assert_eq!(suggest("fluhs", &known), Some("flush"));
        assert_eq!(suggest("zookeeper.connect", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    /// Guards that TOML syntax errors stay on one line and point at the right place.
    #[test]
    fn syntax_error_is_one_line() {
        let text = "node.id = 1\nflush = \n";
        let e = text.parse::<toml::Table>().unwrap_err();
        let e = ConfigError::syntax(text, &e).with_origin("tern.toml");
        let shown = e.to_string();
        assert!(
            shown.starts_with("tern.toml: invalid TOML at line 2, column "),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
    }
}
