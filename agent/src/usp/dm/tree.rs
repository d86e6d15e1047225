//! The instantiated data model: every object the agent has right now, flattened in tree order
//! with its parameter values, and path resolution (instances, wildcards, search expressions)
//! against it. Built per request: the model is small (a few ExecEnvs, DUs and EUs).

use std::collections::HashMap;

use cpevisor_usp::errors::{UspError, INVALID_PATH};
use cpevisor_usp::path::{Leaf, Path, Segment};

use super::schema::{ObjDesc, DEVICE};

/// One step of an object's path.
#[derive(Debug, Clone)]
pub enum Seg {
    /// An object name (`SoftwareModules`).
    Name(&'static str),
    /// An instance number of a table.
    Inst(u32),
}

/// One object of the instantiated model.
#[derive(Debug, Clone)]
pub struct Obj {
    /// `Device.SoftwareModules.DeploymentUnit.1.`
    pub path: String,
    /// The path as steps, for prefix matching without reparsing.
    pub segs: Vec<Seg>,
    /// Its schema entry.
    pub desc: &'static ObjDesc,
    /// The multi-instance table node itself (`...DeploymentUnit.`), which holds no parameters.
    pub table: bool,
    /// Values in the schema's parameter order.
    pub params: Vec<(&'static str, String)>,
    /// What backs the instance (UUID, EUID, ExecEnv name, endpoint ID, subscription number).
    pub key: String,
}

impl Obj {
    /// The value of parameter `name`, if the object has it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
    /// Its instance number when it is an instance (not a table node or a single object).
    pub fn instance(&self) -> Option<u32> {
        match self.segs.last() {
            Some(Seg::Inst(n)) if !self.table => Some(*n),
            _ => None,
        }
    }
    /// How many object names deep it is (`Device.` is 1; an instance counts with its table).
    pub fn depth(&self) -> usize {
        self.segs
            .iter()
            .filter(|s| matches!(s, Seg::Name(_)))
            .count()
    }
}

/// The whole instantiated model, flattened in tree order, with an index by path.
pub struct Tree {
    /// Every object, parents before children.
    pub objs: Vec<Obj>,
    index: HashMap<String, usize>,
}

/// Where a path leads in the supported model.
pub struct SchemaHit {
    /// The schema entry of the object the path names.
    pub desc: &'static ObjDesc,
    /// The path stops at a table's name (`...Subscription.`) with no instance selector.
    pub table: bool,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> UspError {
    UspError::new(INVALID_PATH, format!("{path}: {why}"))
}

/// Checks `path` against the supported data model: 7026 when an object, parameter, command or
/// event does not exist, or a selector sits where no table is.
pub fn schema_of(path: &Path) -> Result<SchemaHit, UspError> {
    let mut desc: &'static ObjDesc = &DEVICE;
    let mut table = false;
    let segs = &path.segments;
    let mut i = 1;
    while i < segs.len() {
        let Segment::Name(name) = &segs[i] else {
            return Err(invalid(path, format!("{} is not a table", desc.name)));
        };
        if table {
            return Err(invalid(path, format!("{} needs an instance", desc.name)));
        }
        desc = desc
            .child(name)
            .ok_or_else(|| invalid(path, format!("no object {name} in {}", desc.name)))?;
        i += 1;
        if desc.multi {
            match segs.get(i) {
                Some(Segment::Name(_)) | None => table = true,
                Some(Segment::Search(exprs)) => {
                    for e in exprs {
                        if !search_param_exists(desc, &e.param) {
                            return Err(invalid(
                                path,
                                format!("no parameter {} in {}", e.param, desc.name),
                            ));
                        }
                    }
                    i += 1;
                }
                Some(_) => i += 1,
            }
        }
    }
    let leaf_ok = match &path.leaf {
        Leaf::Object => true,
        Leaf::Param(p) => !table && desc.param(p).is_some(),
        Leaf::Command(c) => !table && desc.command(c).is_some(),
        Leaf::Event(e) => !table && desc.event(e).is_some(),
    };
    if !leaf_ok {
        return Err(invalid(path, format!("not in {}", desc.name)));
    }
    Ok(SchemaHit { desc, table })
}

fn search_param_exists(desc: &'static ObjDesc, param: &str) -> bool {
    let mut d = desc;
    let mut parts = param.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            return d.param(p).is_some();
        }
        match d.child(p) {
            Some(c) if !c.multi => d = c,
            _ => return false,
        }
    }
    false
}

impl Tree {
    /// Indexes `objs` (already in tree order) by path.
    pub fn new(objs: Vec<Obj>) -> Tree {
        let index = objs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.path.clone(), i))
            .collect();
        Tree { objs, index }
    }

    /// The object whose path is exactly `path` (with its trailing dot).
    pub fn get(&self, path: &str) -> Option<&Obj> {
        self.index.get(path).map(|i| &self.objs[*i])
    }

    /// The objects `path`'s object part names, in tree order (after `schema_of` accepted it).
    pub fn resolve(&self, path: &Path) -> Vec<&Obj> {
        self.objs
            .iter()
            .filter(|o| self.matches(o, &path.segments))
            .collect()
    }

    fn matches(&self, o: &Obj, segs: &[Segment]) -> bool {
        if o.segs.len() != segs.len() {
            return false;
        }
        for (k, (have, want)) in o.segs.iter().zip(segs).enumerate() {
            let ok = match (have, want) {
                (Seg::Name(a), Segment::Name(b)) => a == b,
                (Seg::Inst(a), Segment::Instance(b)) => a == b,
                (Seg::Inst(_), Segment::Wildcard | Segment::Template) => true,
                (Seg::Inst(_), Segment::Search(exprs)) => {
                    let prefix = prefix_path(&o.segs[..=k]);
                    exprs.iter().all(|e| {
                        let (rel, name) = match e.param.rsplit_once('.') {
                            Some((r, n)) => (format!("{r}."), n),
                            None => (String::new(), e.param.as_str()),
                        };
                        self.get(&format!("{prefix}{rel}"))
                            .and_then(|obj| obj.param(name))
                            .is_some_and(|v| e.holds(v))
                    })
                }
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// The dotted path of `segs`, with its trailing dot (`Device.LocalAgent.`).
pub fn prefix_path(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Name(n) => s.push_str(n),
            Seg::Inst(i) => s.push_str(&i.to_string()),
        }
        s.push('.');
    }
    s
}

/// Builds the tree in order: callers push parents before children.
#[derive(Default)]
pub struct TreeBuilder {
    /// The objects pushed so far, in order.
    pub objs: Vec<Obj>,
}

impl TreeBuilder {
    /// Adds a single-instance object under `parent` (None for `Device.`).
    pub fn object(
        &mut self,
        parent: Option<&[Seg]>,
        desc: &'static ObjDesc,
        values: Vec<(&'static str, String)>,
    ) -> Vec<Seg> {
        let mut segs = parent.map(|p| p.to_vec()).unwrap_or_default();
        segs.push(Seg::Name(desc.name));
        self.push(segs.clone(), desc, false, values, String::new());
        segs
    }

    /// Adds the table node of a multi-instance object.
    pub fn table(&mut self, parent: &[Seg], desc: &'static ObjDesc) -> Vec<Seg> {
        let mut segs = parent.to_vec();
        segs.push(Seg::Name(desc.name));
        self.push(segs.clone(), desc, true, Vec::new(), String::new());
        segs
    }

    /// Adds instance `number` of the table at `table`, backed by `key`.
    pub fn instance(
        &mut self,
        table: &[Seg],
        desc: &'static ObjDesc,
        number: u32,
        key: &str,
        values: Vec<(&'static str, String)>,
    ) {
        let mut segs = table.to_vec();
        segs.push(Seg::Inst(number));
        self.push(segs, desc, false, values, key.to_string());
    }

    fn push(
        &mut self,
        segs: Vec<Seg>,
        desc: &'static ObjDesc,
        table: bool,
        mut values: Vec<(&'static str, String)>,
        key: String,
    ) {
        // Schema order, and every parameter the schema names present (empty when unknown).
        let params = desc
            .params
            .iter()
            .map(|p| {
                let v = values
                    .iter()
                    .position(|(n, _)| *n == p.name)
                    .map(|i| std::mem::take(&mut values[i].1))
                    .unwrap_or_default();
                (p.name, v)
            })
            .collect();
        debug_assert!(
            values.iter().all(|(n, _)| desc.param(n).is_some()),
            "values outside the schema of {}",
            desc.name
        );
        self.objs.push(Obj {
            path: prefix_path(&segs),
            segs,
            desc,
            table,
            params,
            key,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usp::dm::schema::check_value;
    use cpevisor_usp::errors::{INVALID_TYPE, INVALID_VALUE};

    fn hit(p: &str) -> Result<SchemaHit, UspError> {
        schema_of(&Path::parse(p).unwrap())
    }

    #[test]
    fn schema_accepts_tr181_names_and_refuses_others() {
        for ok in [
            "Device.",
            "Device.DeviceInfo.MemoryStatus.Free",
            "Device.SoftwareModules.DeploymentUnit.",
            "Device.SoftwareModules.DeploymentUnit.3.ExecutionUnitList",
            "Device.SoftwareModules.DeploymentUnit.*.Update()",
            "Device.SoftwareModules.ExecutionUnit.[Status==\"Active\"].EUID",
            "Device.SoftwareModules.ExecEnv.{i}.Reset()",
            "Device.SoftwareModules.DUStateChange!",
            "Device.Boot!",
            "Device.Reboot()",
            "Device.LocalAgent.Subscription.1.NotifType",
        ] {
            assert!(hit(ok).is_ok(), "{ok}");
        }
        assert!(hit("Device.SoftwareModules.DeploymentUnit.").unwrap().table);
        for bad in [
            "Device.Nope.",
            "Device.DeviceInfo.1.",
            "Device.SoftwareModules.DeploymentUnit.UUID",
            "Device.SoftwareModules.DeploymentUnit.Status.1.",
            "Device.SoftwareModules.DeploymentUnit.1.Colour",
            "Device.SoftwareModules.DeploymentUnit.1.Reset()",
            "Device.SoftwareModules.Boot!",
            "Device.SoftwareModules.ExecutionUnit.[Colour==\"red\"].",
        ] {
            assert_eq!(hit(bad).err().map(|e| e.code), Some(INVALID_PATH), "{bad}");
        }
    }

    #[test]
    fn value_checks_give_7011_and_7012() {
        let env = DEVICE
            .child("SoftwareModules")
            .and_then(|s| s.child("ExecEnv"))
            .unwrap();
        let enable = env.param("Enable").unwrap();
        assert!(check_value(enable, "true").is_ok());
        assert!(check_value(enable, "0").is_ok());
        assert_eq!(check_value(enable, "yes").unwrap_err().0, INVALID_TYPE);
        let sub = DEVICE
            .child("LocalAgent")
            .and_then(|l| l.child("Subscription"))
            .unwrap();
        let nt = sub.param("NotifType").unwrap();
        assert!(check_value(nt, "ValueChange").is_ok());
        assert_eq!(check_value(nt, "valuechange").unwrap_err().0, INVALID_VALUE);
        let uptime = DEVICE.child("DeviceInfo").unwrap().param("UpTime").unwrap();
        assert_eq!(check_value(uptime, "-1").unwrap_err().0, INVALID_TYPE);
        assert_eq!(
            check_value(uptime, "4294967296").unwrap_err().0,
            INVALID_TYPE
        );
    }

    #[test]
    fn search_resolves_against_instance_values() {
        let mut b = TreeBuilder::default();
        let dev = b.object(None, &DEVICE, Vec::new());
        let sm_desc = DEVICE.child("SoftwareModules").unwrap();
        let sm = b.object(Some(&dev), sm_desc, Vec::new());
        let eu = sm_desc.child("ExecutionUnit").unwrap();
        let t = b.table(&sm, eu);
        b.instance(
            &t,
            eu,
            4,
            "eu-1",
            vec![("EUID", "eu-1".into()), ("Status", "Active".into())],
        );
        b.instance(
            &t,
            eu,
            7,
            "eu-2",
            vec![("EUID", "eu-2".into()), ("Status", "Idle".into())],
        );
        let tree = Tree::new(b.objs);
        let found = |p: &str| -> Vec<String> {
            tree.resolve(&Path::parse(p).unwrap())
                .iter()
                .map(|o| o.path.clone())
                .collect()
        };
        assert_eq!(
            found("Device.SoftwareModules.ExecutionUnit.[Status!=\"Active\"]."),
            ["Device.SoftwareModules.ExecutionUnit.7."]
        );
        assert_eq!(found("Device.SoftwareModules.ExecutionUnit.*.").len(), 2);
        assert!(found("Device.SoftwareModules.ExecutionUnit.5.").is_empty());
        assert_eq!(
            tree.get("Device.SoftwareModules.ExecutionUnit.4.")
                .unwrap()
                .params
                .len(),
            eu.params.len(),
            "every schema parameter present"
        );
    }
}
