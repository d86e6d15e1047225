//! GetSupportedDM against the static schema: object paths in supported (`{i}`) or instantiated
//! notation (an instantiated one must exist), and, since USP 1.3, command, event and parameter
//! paths, which report only that element of their object (TR-369 "RequestedObjectResult").

use cpevisor_usp::errors::{UspError, INVALID_PATH};
use cpevisor_usp::path::{Leaf, Path, Segment};

use super::schema::{self, ObjDesc};
use super::tree::{self, Tree};
use super::types::{SupportedFilter, SupportedObject};

pub fn supported_one(
    tree: &Tree,
    p: &str,
    f: SupportedFilter,
) -> Result<Vec<SupportedObject>, UspError> {
    let path = Path::parse(p)?;
    let hit = tree::schema_of(&path)?;
    // An instantiated path (instance numbers, no `{i}`) must name an existing object.
    let instantiated = path
        .segments
        .iter()
        .any(|s| matches!(s, Segment::Instance(_)))
        && !path.segments.iter().any(|s| matches!(s, Segment::Template));
    if instantiated && tree.resolve(&path).is_empty() {
        return Err(UspError::new(
            INVALID_PATH,
            format!("{p}: no such object instance"),
        ));
    }
    // The template form of the object: instances and wildcards become {i}.
    let mut base = String::new();
    let mut desc: &'static ObjDesc = &schema::DEVICE;
    for (k, seg) in path.segments.iter().enumerate() {
        if let Segment::Name(n) = seg {
            if k > 0 {
                desc = desc.child(n).expect("schema_of checked it");
            }
            base.push_str(n);
            base.push('.');
            if desc.multi {
                base.push_str("{i}.");
            }
        }
    }
    debug_assert!(std::ptr::eq(desc, hit.desc));
    let only = |params: bool, commands: bool, events: bool| {
        SupportedObject {
            path: base.clone(),
            multi: desc.multi,
            add_delete: desc.creatable,
            unique_keys: &[],
            params: Vec::new(),
            commands: Vec::new(),
            events: Vec::new(),
        }
        .with(desc, &path.leaf, params, commands, events)
    };
    // A command, event or parameter path: that element only, whatever the flags say.
    match &path.leaf {
        Leaf::Param(_) => return Ok(vec![only(true, false, false)]),
        Leaf::Command(_) => return Ok(vec![only(false, true, false)]),
        Leaf::Event(_) => return Ok(vec![only(false, false, true)]),
        Leaf::Object => {}
    }
    let mut out = Vec::new();
    walk(hit.desc, &base, f, 0, &mut out);
    Ok(out)
}

impl SupportedObject {
    /// Keeps the one element `leaf` names.
    fn with(
        mut self,
        d: &'static ObjDesc,
        leaf: &Leaf,
        params: bool,
        commands: bool,
        events: bool,
    ) -> SupportedObject {
        match leaf {
            Leaf::Param(n) if params => {
                self.params = d
                    .params
                    .iter()
                    .filter(|p| p.name == n)
                    .map(|p| (p.name, p.access, p.kind))
                    .collect()
            }
            Leaf::Command(n) if commands => {
                self.commands = d.commands.iter().filter(|c| c.name == n).collect()
            }
            Leaf::Event(n) if events => {
                self.events = d.events.iter().filter(|e| e.name == n).collect()
            }
            _ => {}
        }
        self
    }
}

fn walk(
    d: &'static ObjDesc,
    path: &str,
    f: SupportedFilter,
    level: u32,
    out: &mut Vec<SupportedObject>,
) {
    out.push(SupportedObject {
        path: path.to_string(),
        multi: d.multi,
        add_delete: d.creatable,
        unique_keys: if f.unique_keys {
            schema::unique_key_names(d)
        } else {
            &[]
        },
        params: if f.params {
            d.params
                .iter()
                .map(|p| (p.name, p.access, p.kind))
                .collect()
        } else {
            Vec::new()
        },
        commands: if f.commands {
            d.commands.iter().collect()
        } else {
            Vec::new()
        },
        events: if f.events {
            d.events.iter().collect()
        } else {
            Vec::new()
        },
    });
    if f.first_level_only && level >= 1 {
        return;
    }
    for c in d.children {
        let cp = if c.multi {
            format!("{path}{}.{{i}}.", c.name)
        } else {
            format!("{path}{}.", c.name)
        };
        walk(c, &cp, f, level + 1, out);
    }
}
