//! Get, GetInstances and GetSupportedDM: read-only walks of the materialized tree.

use std::collections::BTreeSet;

use cpevisor_usp::errors::*;
use cpevisor_usp::path::{Leaf, Path};

use super::model::{unique_keys, DataModel};
use super::supported;
use super::tree::{self, Seg, Tree};
use super::types::{GetResult, InstancesResult, PathValues, SupportedFilter, SupportedResult};

impl DataModel {
    /// USP Get of `paths`, partial paths `max_depth` levels deep (0: no limit).
    pub fn get(&mut self, paths: &[String], max_depth: u32) -> Vec<GetResult> {
        let tree = self.materialize();
        paths
            .iter()
            .map(|p| {
                let mut r = GetResult {
                    requested_path: p.clone(),
                    err: None,
                    resolved: Vec::new(),
                };
                match get_one(&tree, p, max_depth) {
                    Ok(res) => r.resolved = res,
                    Err(e) => r.err = Some(e),
                }
                r
            })
            .collect()
    }

    /// USP GetInstances of `paths`, only the first level below each when `first_level_only`.
    pub fn get_instances(
        &mut self,
        paths: &[String],
        first_level_only: bool,
    ) -> Vec<InstancesResult> {
        let tree = self.materialize();
        paths
            .iter()
            .map(|p| {
                let mut r = InstancesResult {
                    requested_path: p.clone(),
                    err: None,
                    instances: Vec::new(),
                };
                match instances_one(&tree, p, first_level_only) {
                    Ok(i) => r.instances = i,
                    Err(e) => r.err = Some(e),
                }
                r
            })
            .collect()
    }

    /// USP GetSupportedDM of `paths`, with what `filter` asks for.
    pub fn get_supported_dm(
        &mut self,
        paths: &[String],
        filter: SupportedFilter,
    ) -> Vec<SupportedResult> {
        let tree = self.materialize();
        paths
            .iter()
            .map(|p| {
                let mut r = SupportedResult {
                    requested_path: p.clone(),
                    err: None,
                    objects: Vec::new(),
                };
                match supported::supported_one(&tree, p, filter) {
                    Ok(o) => r.objects = o,
                    Err(e) => r.err = Some(e),
                }
                r
            })
            .collect()
    }
}

fn get_one(tree: &Tree, p: &str, max_depth: u32) -> Result<PathValues, UspError> {
    let path = Path::parse(p)?;
    tree::schema_of(&path)?;
    let roots = tree.resolve(&path);
    // R-GET.0: a path without wildcards or search expressions must name something that is
    // instantiated; only a search path may match nothing and still succeed (empty result).
    if roots.is_empty() && path.is_exact() {
        return Err(UspError::new(
            INVALID_PATH,
            format!("{p}: no such object instance"),
        ));
    }
    let mut out = Vec::new();
    match &path.leaf {
        Leaf::Param(name) => {
            for o in roots {
                if let Some(v) = o.param(name) {
                    out.push((o.path.clone(), vec![(name.clone(), v.to_string())]));
                }
            }
        }
        Leaf::Object => {
            for root in roots {
                let base = root.depth();
                for o in tree.objs.iter().filter(|o| o.path.starts_with(&root.path)) {
                    if o.table || o.params.is_empty() {
                        continue;
                    }
                    let depth = o.depth() - base + 1;
                    if max_depth != 0 && depth > max_depth as usize {
                        continue;
                    }
                    out.push((
                        o.path.clone(),
                        o.params
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.clone()))
                            .collect(),
                    ));
                }
            }
        }
        Leaf::Command(_) | Leaf::Event(_) => {
            return Err(UspError::new(
                INVALID_PATH,
                format!("{p}: Get takes object and parameter paths, not commands or events"),
            ))
        }
    }
    Ok(out)
}

fn instances_one(tree: &Tree, p: &str, first_level_only: bool) -> Result<PathValues, UspError> {
    let path = Path::parse(p)?;
    tree::schema_of(&path)?;
    if path.leaf != Leaf::Object {
        return Err(UspError::new(
            INVALID_PATH,
            format!("{p}: GetInstances takes object paths"),
        ));
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for root in tree.resolve(&path) {
        let root_insts = root
            .segs
            .iter()
            .filter(|s| matches!(s, Seg::Inst(_)))
            .count();
        for o in tree.objs.iter().filter(|o| o.path.starts_with(&root.path)) {
            if o.instance().is_none() || !seen.insert(o.path.clone()) {
                continue;
            }
            let insts = o.segs.iter().filter(|s| matches!(s, Seg::Inst(_))).count();
            if first_level_only && insts > root_insts + usize::from(root.table) {
                continue;
            }
            out.push((o.path.clone(), unique_keys(o)));
        }
    }
    Ok(out)
}
