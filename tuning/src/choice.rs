//! The named choices a key can take (`flush = "always"`, …), as plain enums.
//!
//! They are ours, not the engine's or the network layer's, so that this crate depends on
//! neither; the broker maps them to the engine's types in one place.

use std::fmt;

/// A key's closed set of named values.
pub(crate) trait Choice: Sized + Copy + 'static {
    /// Every value, in the order the error messages list them.
    const ALL: &'static [Self];
    /// Values Kafka accepts that Tern does not support yet, and what to use instead.
    const UNSUPPORTED: &'static [&'static str] = &[];

    /// The name in configuration files and Kafka requests.
    fn name(self) -> &'static str;

    /// The value named `name` (exact, case-sensitive like Kafka).
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The allowed names, comma-separated.
    fn allowed() -> String {
        Self::ALL
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! choice {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $variant:ident = $name:literal,)+ }
     $(unsupported = [$($unsupported:literal),*])?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $($(#[$vdoc])* $variant,)+
        }

        impl $ty {
            /// The name in configuration files and Kafka requests.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl Choice for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant,)+];
            $(const UNSUPPORTED: &'static [&'static str] = &[$($unsupported),*];)?
            fn name(self) -> &'static str {
                self.as_str()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

choice! {
    /// When an append counts as done (`flush`, ours).
    FlushMode {
        /// Durable (RWF_DSYNC, or write + fdatasync) before the append is acknowledged.
        /// The default.
        Always = "always",
        /// Written before the acknowledgement; fdatasync every `flush.ms`.
        Interval = "interval",
        /// Written before the acknowledgement; synced only at segment roll and close.
        Never = "never",
    }
}

choice! {
    /// Which timestamp a stored batch carries (Kafka's `message.timestamp.type`).
    TimestampType {
        /// The producer's timestamps, kept as sent. The default.
        CreateTime = "CreateTime",
        /// The broker stamps each batch with the time it was appended.
        LogAppendTime = "LogAppendTime",
    }
}

choice! {
    /// Whether segment files are opened with `O_DIRECT` (`io.direct`, ours).
    DirectIo {
        /// Always; startup fails with a clear line on a filesystem that refuses it. The
        /// default.
        On = "on",
        /// Where the filesystem allows it; elsewhere warn once and write buffered.
        Auto = "auto",
        /// Never: buffered writes made durable with RWF_DSYNC / fdatasync.
        Off = "off",
    }
}

choice! {
    /// How partitions without a pin are spread over shards (`placement`, ours).
    PlacementPolicy {
        /// A topic's partitions go to consecutive shards starting at a shard chosen by the
        /// topic's hash, so every topic spreads evenly. The default.
        Balanced = "balanced",
        /// Each partition goes to the shard chosen by the hash of topic and partition.
        Hash = "hash",
    }
}

choice! {
    /// What happens to old segments (Kafka's `cleanup.policy`).
    CleanupPolicy {
        /// Delete whole segments past retention. The only policy supported so far.
        Delete = "delete",
    }
    unsupported = ["compact", "compact,delete", "delete,compact"]
}
