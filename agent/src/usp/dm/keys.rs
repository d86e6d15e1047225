//! Unique keys stay unique (TR-369 R-KEY.2): a Set may change a functional key such as
//! `Subscription.{i}.ID`, but not to a value another instance with the same other keys holds.

use cpevisor_usp::errors::{UspError, DUPLICATE_KEY};

use super::tree::{Obj, Tree};

/// 7025 when setting `name` to `value` on `target` would give it the unique key (ID, Recipient)
/// of another subscription.
pub fn check_unique(tree: &Tree, target: &Obj, name: &str, value: &str) -> Result<(), UspError> {
    if target.desc.name != "Subscription" || name != "ID" {
        return Ok(());
    }
    let recipient = target.param("Recipient");
    let taken = tree.objs.iter().any(|o| {
        std::ptr::eq(o.desc, target.desc)
            && o.instance().is_some()
            && o.path != target.path
            && o.param("Recipient") == recipient
            && o.param("ID") == Some(value)
    });
    if taken {
        return Err(UspError::new(
            DUPLICATE_KEY,
            format!("subscription ID {value:?} exists for this controller"),
        ));
    }
    Ok(())
}
