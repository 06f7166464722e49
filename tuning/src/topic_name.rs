//! Topic names, with Kafka's rules and Kafka's messages (`org.apache.kafka.common.internals.
//! Topic.validate`): a name becomes a directory name (`<topic>-<partition>`), so it is short
//! and made of characters that are safe in paths.

use thiserror::Error;

/// The longest topic name Kafka allows (255 minus room for `-<partition>` and a suffix).
pub const TOPIC_NAME_LEN_MAX: usize = 249;

/// Why a topic name is refused. Messages follow Kafka's `InvalidTopicException` texts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicNameError {
    #[error("Topic name is illegal, it can't be empty")]
    Empty,
    #[error("Topic name cannot be \".\" or \"..\"")]
    Dots,
    #[error(
        "Topic name is illegal, it can't be longer than {TOPIC_NAME_LEN_MAX} characters, \
         topic name: {name}"
    )]
    TooLong { name: String },
    #[error(
        "Topic name \"{name}\" is illegal, it contains a character other than ASCII \
         alphanumerics, '.', '_' and '-'"
    )]
    IllegalCharacter { name: String },
}

/// Checks a topic name: non-empty, not `.` or `..`, at most 249 characters, only
/// `[a-zA-Z0-9._-]`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return Err(TopicNameError::TooLong {
            name: name.to_owned(),
        });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(TopicNameError::IllegalCharacter {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards Kafka's topic name rules, at their edges.
    #[test]
    fn names() {
        for good in [
            "orders",
            "a",
            "...",
            "a.b_c-D9",
            "__consumer_offsets",
            &"x".repeat(249),
        ] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(validate_topic_name("."), Err(TopicNameError::Dots));
        assert_eq!(validate_topic_name(".."), Err(TopicNameError::Dots));
        let long = "x".repeat(250);
        assert_eq!(
            validate_topic_name(&long),
            Err(TopicNameError::TooLong { name: long.clone() })
        );
        for bad in ["a b", "a/b", "a:b", "é", "a\0", "orders!"] {
            let e = validate_topic_name(bad).unwrap_err();
            assert_eq!(
                e,
                TopicNameError::IllegalCharacter {
                    name: bad.to_owned()
                }
            );
        }
        assert_eq!(
            validate_topic_name("a b").unwrap_err().to_string(),
            "Topic name \"a b\" is illegal, it contains a character other than ASCII \
             alphanumerics, '.', '_' and '-'"
        );
    }
}
