//! The MQTT names both ends of USP check before they publish or subscribe: a topic we may
//! publish to, and one topic level (what a controller identity becomes in `<topic>/<identity>`).

/// Longest topic accepted, ours or from a peer's Response Topic.
pub const MAX_TOPIC_LEN: usize = 1024;

/// A topic we may publish to: non-empty, bounded, no wildcards, no U+0000.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_LEN && !t.contains(['+', '#', '\0'])
}

/// One level of a topic name: what a controller identity becomes in `<topic>/<identity>`.
pub fn valid_topic_level(level: &str) -> bool {
    !level.is_empty() && level.len() <= 256 && !level.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_with_wildcards_are_not_publishable() {
        assert!(valid_topic("usp/controller/self::ctl"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a/#"));
        assert!(!valid_topic("a/+/b"));
        assert!(!valid_topic(&"x".repeat(MAX_TOPIC_LEN + 1)));
    }

    #[test]
    fn a_level_has_no_separator_or_wildcard() {
        assert!(valid_topic_level("self::ops"));
        assert!(!valid_topic_level(""));
        assert!(!valid_topic_level("a/b"));
        assert!(!valid_topic_level("+"));
        assert!(!valid_topic_level("#"));
        assert!(!valid_topic_level(&"x".repeat(257)));
    }
}
