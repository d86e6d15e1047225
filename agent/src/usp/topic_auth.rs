//! Who may speak for which controller on the agent's MQTT topics. The agent's TLS peer is the
//! broker, so the topic a Record arrives on is all the agent knows of its sender, and the
//! broker's ACL (`cpevisor_usp::broker::usp_acl`) says which certificates may write each topic:
//!
//! - `<topic>/<CN>` is written only by the certificate `CN`: it carries the Records of the
//!   controller configured with `identity` = `CN`, and of no other.
//! - the bare `<topic>`, where standard TR-369 controllers publish, is written by every
//!   controller the ACL lists for it, and the agent cannot tell them apart: Records there count
//!   only for controllers without `identity`, and those must all have one role, or the
//!   lower-privileged one could write the other's EndpointID in `from_id` and get its role.
//!   Such a config is refused rather than granting the bare topic the lowest role: a
//!   FullAccess controller silently answered 7006 is worse than an error at start.

use super::config::{ControllerConfig, Role};

fn rank(r: Role) -> u8 {
    match r {
        Role::ReadOnly => 0,
        Role::FullAccess => 1,
    }
}

/// Refuses a controller list in which a bare-topic controller could act as one with a higher
/// role, naming both.
pub fn check_bare_topic_roles(topic: &str, controllers: &[ControllerConfig]) -> Result<(), String> {
    let bare: Vec<&ControllerConfig> = controllers
        .iter()
        .filter(|c| c.identity.is_none())
        .collect();
    let (Some(hi), Some(lo)) = (
        bare.iter().max_by_key(|c| rank(c.role)),
        bare.iter().min_by_key(|c| rank(c.role)),
    ) else {
        return Ok(());
    };
    if hi.role == lo.role {
        return Ok(());
    }
    Err(format!(
        "controllers {} ({}) and {} ({}) both send to {topic} (no `identity`), where the broker \
         cannot tell them apart: {} could act as {}. Give {} an `identity` (its certificate's CN; \
         it then publishes to {topic}/<identity>), or both the same role",
        hi.endpoint_id,
        hi.role.as_str(),
        lo.endpoint_id,
        lo.role.as_str(),
        lo.endpoint_id,
        hi.endpoint_id,
        lo.endpoint_id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl(id: &str, role: Role, identity: Option<&str>) -> ControllerConfig {
        ControllerConfig {
            endpoint_id: id.into(),
            role,
            identity: identity.map(String::from),
            reply_to: None,
        }
    }

    #[test]
    fn mixed_roles_on_the_bare_topic_are_refused_by_name() {
        let t = "usp/agent/os::a";
        let err = check_bare_topic_roles(
            t,
            &[
                ctl("ops::ro", Role::ReadOnly, None),
                ctl("ops::acs", Role::FullAccess, None),
            ],
        )
        .unwrap_err();
        assert!(
            err.contains("ops::acs (FullAccess) and ops::ro (ReadOnly)")
                && err.contains("Give ops::ro an `identity`"),
            "{err}"
        );
        // The read-only one on its identity sub-topic, or equal roles: accepted.
        for list in [
            vec![
                ctl("ops::ro", Role::ReadOnly, Some("ro-cn")),
                ctl("ops::acs", Role::FullAccess, None),
            ],
            vec![
                ctl("ops::a", Role::FullAccess, None),
                ctl("ops::b", Role::FullAccess, None),
                ctl("ops::ro", Role::ReadOnly, Some("ro")),
            ],
            vec![ctl("ops::ro", Role::ReadOnly, None)],
            vec![],
        ] {
            assert_eq!(check_bare_topic_roles(t, &list), Ok(()), "{list:?}");
        }
    }
}
