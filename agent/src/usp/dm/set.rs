//! Set: every parameter validated (type, value, writability, unique keys) before anything
//! changes unless the request allows partial success.

use cpevisor_usp::errors::*;
use cpevisor_usp::path::{Leaf, Path};

use super::keys;
use super::local_agent::{apply_sub_param, check_sub_value};
use super::model::{fault_err, DataModel};
use super::schema::{check_value, parse_bool, Access, ObjDesc};
use super::tree::{self, Tree};
use super::types::{ObjSettings, ParamError, RequestError, SetResult, UpdatedInstance};

impl DataModel {
    /// USP Set; all or nothing unless `allow_partial`.
    pub fn set(
        &mut self,
        objs: &[ObjSettings],
        allow_partial: bool,
    ) -> Result<Vec<SetResult>, RequestError> {
        self.touched = true;
        let tree = self.materialize();
        // Validate everything first, so a refused request changes nothing.
        let mut plans = Vec::new();
        for o in objs {
            plans.push((o, plan_set(&tree, o)));
        }
        if !allow_partial {
            if let Some((_, Err((err, param_errs)))) = plans.iter().find(|(_, p)| p.is_err()) {
                return Err(RequestError {
                    err: err.clone(),
                    param_errs: param_errs.clone(),
                });
            }
        }
        let mut out = Vec::new();
        for (o, plan) in plans {
            let outcome = match plan {
                Err(e) => Err(e),
                Ok(insts) => {
                    let mut done = Vec::new();
                    let mut failed = None;
                    for inst in insts {
                        // Only non-required parameters failed (or none were given): the object
                        // is still updated, with the failures as param_errs (TR-369's
                        // allow_partial/required table), so there is nothing to apply.
                        let applied = if inst.changes.is_empty() {
                            Ok(())
                        } else {
                            self.apply_set(&inst)
                        };
                        match applied {
                            Ok(()) => done.push(UpdatedInstance {
                                affected_path: inst.obj_path.clone(),
                                updated: inst
                                    .changes
                                    .iter()
                                    .map(|(n, v)| (n.to_string(), v.clone()))
                                    .collect(),
                                param_errs: inst.param_errs.clone(),
                            }),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) if !allow_partial => {
                            return Err(RequestError {
                                err: e,
                                param_errs: Vec::new(),
                            })
                        }
                        Some(e) => Err((e, Vec::new())),
                        None => Ok(done),
                    }
                }
            };
            out.push(SetResult {
                requested_path: o.obj_path.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    fn apply_set(&mut self, inst: &SetPlan) -> Result<(), UspError> {
        match inst.desc.name {
            "ExecEnv" => {
                for (name, value) in &inst.changes {
                    if *name == "Enable" {
                        self.agent.set_env_enable(&inst.key, parse_bool(value))?;
                    }
                }
                Ok(())
            }
            "Controller" => {
                for (name, value) in &inst.changes {
                    if *name == "Enable" {
                        let list = &mut self.store.data.disabled_controllers;
                        list.retain(|c| *c != inst.key);
                        if !parse_bool(value) {
                            list.push(inst.key.clone());
                        }
                    }
                }
                self.store.save_if_changed().map_err(fault_err)
            }
            "Subscription" => {
                let n: u32 = inst.key.parse().unwrap_or(0);
                let Some(s) = self.subs.iter_mut().find(|s| s.instance == n) else {
                    return Err(UspError::new(
                        OBJECT_DOES_NOT_EXIST,
                        format!("{} no longer exists", inst.obj_path),
                    ));
                };
                for (name, value) in &inst.changes {
                    apply_sub_param(s, name, value);
                }
                self.save_subs().map_err(fault_err)
            }
            other => Err(UspError::new(
                NOT_WRITABLE,
                format!("{other} has no writable parameters"),
            )),
        }
    }
}

/// A Set validated for one instance.
struct SetPlan {
    obj_path: String,
    desc: &'static ObjDesc,
    key: String,
    changes: Vec<(&'static str, String)>,
    param_errs: Vec<ParamError>,
}

pub(super) fn check_param(desc: &'static ObjDesc, name: &str, value: &str) -> Result<(), UspError> {
    // TR-369's error table: 7010 is the Add/Set code for a parameter that does not exist.
    let Some(p) = desc.param(name) else {
        return Err(UspError::new(
            UNSUPPORTED_PARAMETER,
            format!("no parameter {name} in {}", desc.name),
        ));
    };
    if p.access != Access::ReadWrite {
        return Err(UspError::new(
            NOT_WRITABLE,
            format!("{}.{name} is read-only", desc.name),
        ));
    }
    check_value(p, value).map_err(|(code, msg)| UspError::new(code, msg))
}

fn plan_set(tree: &Tree, o: &ObjSettings) -> Result<Vec<SetPlan>, (UspError, Vec<ParamError>)> {
    let path = Path::parse(&o.obj_path).map_err(|e| (e, Vec::new()))?;
    let hit = tree::schema_of(&path).map_err(|e| (e, Vec::new()))?;
    if path.leaf != Leaf::Object || hit.table {
        return Err((
            UspError::new(
                INVALID_PATH,
                format!("{}: Set takes object instance paths", o.obj_path),
            ),
            Vec::new(),
        ));
    }
    let targets = tree.resolve(&path);
    if targets.is_empty() && path.is_exact() {
        return Err((
            UspError::new(
                OBJECT_DOES_NOT_EXIST,
                format!("{} does not exist", o.obj_path),
            ),
            Vec::new(),
        ));
    }
    let mut plans = Vec::new();
    for t in targets {
        let mut plan = SetPlan {
            obj_path: t.path.clone(),
            desc: t.desc,
            key: t.key.clone(),
            changes: Vec::new(),
            param_errs: Vec::new(),
        };
        for (name, value, required) in &o.params {
            let checked = check_param(t.desc, name, value).and_then(|_| {
                if t.desc.name == "Subscription" {
                    check_sub_value(name, value)
                        .and_then(|_| keys::check_unique(tree, t, name, value))
                } else {
                    Ok(())
                }
            });
            match checked {
                Ok(()) => {
                    let p = t.desc.param(name).expect("checked");
                    plan.changes.push((p.name, value.clone()));
                }
                Err(err) => {
                    let pe = ParamError {
                        path: format!("{}{name}", t.path),
                        err: err.clone(),
                    };
                    if *required {
                        return Err((err, vec![pe]));
                    }
                    plan.param_errs.push(pe);
                }
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}
