//! JSON objects read field by field, for the types whose derived reader would buffer: serde's
//! internally tagged and untagged enums and `flatten` first read the whole object into its
//! `Content` tree and then every type inside a second time from it, a copy of each reader per
//! type (docs/flash.md, section 10). A hand-written visitor instead keeps one slot per field
//! (`Option`: absent; for an optional field `Option<Option<T>>`, to tell `null` from absent),
//! fills each with [`fill`] as its key arrives, and builds the value when the object ends.

use serde::de::{Error, MapAccess};
use serde::Deserialize;

/// Reads the value of field `name` into its slot; a field given twice is refused, as serde's
/// derived readers refuse it.
pub fn fill<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(A::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// A required field's value: `missing field `name`` when it was not given.
pub fn required<T, E: Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(name))
}

/// A required field that another use of the same name allows to be `null`: given, and not
/// `null`.
pub fn required_value<T, E: Error>(slot: Option<Option<T>>, name: &'static str) -> Result<T, E> {
    required(slot, name)?.ok_or_else(|| E::custom(format_args!("field `{name}` must not be null")))
}

/// The first of `slots` (name, still filled) that is filled: a field the value being built did
/// not take, given where it does not belong.
pub fn left_over(slots: &[(&'static str, bool)]) -> Option<&'static str> {
    slots
        .iter()
        .find(|(_, filled)| *filled)
        .map(|(name, _)| *name)
}
