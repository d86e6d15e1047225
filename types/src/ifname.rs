//! Network interface names: one rule for the VMM's taps, the agent's taps and veths, and the
//! bridges apps join.

use std::fmt;

use crate::clip::clip;

/// Linux's limit on interface names (IFNAMSIZ), terminating NUL excluded.
pub const IFNAME_MAX: usize = 15;

/// A name the kernel accepts for a network interface, and no more: 1 to 15 bytes of
/// `[A-Za-z0-9._-]`, not `.` or `..`. The kernel itself also takes other bytes, but `/` and `:`
/// break sysfs and aliases, whitespace breaks every tool, and `%` makes TUNSETIFF pick a new
/// name (`tap%d`) instead of attaching to the one named: the allow-list refuses them all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

/// What is wrong with an interface name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfNameError {
    /// The empty string.
    Empty,
    /// Longer than `IFNAME_MAX` bytes (the length it has).
    TooLong(usize),
    /// `.` or `..`: sysfs entries, not names.
    Dots,
    /// A character outside `[A-Za-z0-9._-]` (the first one).
    BadChar(char),
}

impl fmt::Display for IfNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IfNameError::Empty => f.write_str("an interface name cannot be empty"),
            IfNameError::TooLong(n) => {
                write!(f, "{n} bytes, an interface name has at most {IFNAME_MAX}")
            }
            IfNameError::Dots => f.write_str("'.' and '..' are not interface names"),
            IfNameError::BadChar(c) => {
                let kind = match c {
                    '/' => "'/'",
                    ':' => "':'",
                    c if c.is_whitespace() => "whitespace",
                    c if c.is_control() => "a control character",
                    c if !c.is_ascii() => "a non-ASCII character",
                    _ => "",
                };
                match kind {
                    "" => write!(f, "{c:?} is not allowed (only [A-Za-z0-9._-])"),
                    kind => write!(f, "contains {kind} {c:?} (only [A-Za-z0-9._-])"),
                }
            }
        }
    }
}

impl std::error::Error for IfNameError {}

impl IfName {
    /// Checks `name` against the rule above.
    pub fn parse(name: &str) -> Result<IfName, IfNameError> {
        if name.is_empty() {
            return Err(IfNameError::Empty);
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(IfNameError::BadChar(c));
        }
        if name.len() > IFNAME_MAX {
            return Err(IfNameError::TooLong(name.len()));
        }
        if name == "." || name == ".." {
            return Err(IfNameError::Dots);
        }
        Ok(IfName(name.to_string()))
    }

    /// The name as the kernel sees it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for IfName {
    type Err = IfNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IfName::parse(s)
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for IfName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for IfName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for IfName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for IfName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        IfName::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("interface name {:?}: {e}", clip(&s))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_names_in_use() {
        for ok in [
            "tap0",
            "br-lan",
            "cpv-eu-16383",
            "eth0.2",
            "wlan_1",
            "a",
            "x..y",
        ] {
            assert_eq!(IfName::parse(ok).unwrap().as_str(), ok);
        }
        assert!(IfName::parse(&"a".repeat(15)).is_ok());
    }

    #[test]
    fn each_rejected_form_says_why() {
        let cases: &[(&str, IfNameError, &str)] = &[
            ("", IfNameError::Empty, "empty"),
            ("abcdefghijklmnop", IfNameError::TooLong(16), "at most 15"),
            (".", IfNameError::Dots, "'..'"),
            ("..", IfNameError::Dots, "'..'"),
            ("a/b", IfNameError::BadChar('/'), "'/'"),
            ("a b", IfNameError::BadChar(' '), "whitespace"),
            ("a\tb", IfNameError::BadChar('\t'), "whitespace"),
            ("a\nb", IfNameError::BadChar('\n'), "whitespace"),
            ("a\0b", IfNameError::BadChar('\0'), "control"),
            ("eth0:1", IfNameError::BadChar(':'), "':'"),
            ("tap%d", IfNameError::BadChar('%'), "'%'"),
            ("täp", IfNameError::BadChar('ä'), "non-ASCII"),
        ];
        for (name, err, says) in cases {
            let e = IfName::parse(name).unwrap_err();
            assert_eq!(&e, err, "{name:?}");
            assert!(e.to_string().contains(says), "{name:?}: {e}");
        }
    }

    #[test]
    fn serde_checks_the_name() {
        let n: IfName = serde_json::from_str("\"tap0\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"tap0\"");
        let e = serde_json::from_str::<IfName>("\"..\"").unwrap_err();
        assert!(e.to_string().contains("interface name"), "{e}");
    }
}
