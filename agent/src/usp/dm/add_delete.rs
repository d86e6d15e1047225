//! Add and Delete: only `Device.LocalAgent.Subscription.{i}` is creatable and deletable by a
//! controller; every other table belongs to the agent.

use cpevisor_usp::errors::*;
use cpevisor_usp::path::{Leaf, Path};

use super::local_agent::{apply_sub_param, check_sub_value};
use super::model::{fault_err, DataModel};
use super::persist::Subscription;
use super::set::check_param;
use super::tree::{self, Tree};
use super::types::{
    AddResult, Caller, Created, DeleteResult, ObjSettings, ParamError, RequestError,
    MAX_SUBSCRIPTIONS,
};
use crate::model::{now_secs, rfc3339};

impl DataModel {
    /// USP Add: one new instance per object; all or nothing unless `allow_partial`.
    pub fn add(
        &mut self,
        caller: &Caller,
        objs: &[ObjSettings],
        allow_partial: bool,
    ) -> Result<Vec<AddResult>, RequestError> {
        self.touched = true;
        let mut out = Vec::new();
        let before = self.subs.clone();
        for o in objs {
            let outcome = self.add_one(caller, o);
            if let Err((err, param_errs)) = &outcome {
                if !allow_partial {
                    self.subs = before;
                    let _ = self.save_subs();
                    return Err(RequestError {
                        err: err.clone(),
                        param_errs: param_errs.clone(),
                    });
                }
            }
            out.push(AddResult {
                requested_path: o.obj_path.clone(),
                outcome,
            });
        }
        Ok(out)
    }

    fn add_one(
        &mut self,
        caller: &Caller,
        o: &ObjSettings,
    ) -> Result<Created, (UspError, Vec<ParamError>)> {
        let path = Path::parse(&o.obj_path).map_err(|e| (e, Vec::new()))?;
        let hit = tree::schema_of(&path).map_err(|e| (e, Vec::new()))?;
        if path.leaf != Leaf::Object || !hit.desc.multi || !hit.table {
            return Err((
                UspError::new(NOT_A_TABLE, format!("{}: not a table", o.obj_path)),
                Vec::new(),
            ));
        }
        if !hit.desc.creatable {
            return Err((
                UspError::new(
                    NOT_CREATABLE,
                    format!(
                        "{}: controllers cannot create {}",
                        o.obj_path, hit.desc.name
                    ),
                ),
                Vec::new(),
            ));
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err((
                UspError::new(
                    RESOURCES_EXCEEDED,
                    format!("already {MAX_SUBSCRIPTIONS} subscriptions"),
                ),
                Vec::new(),
            ));
        }
        let instance = self.store.next("Subscription");
        let mut sub = Subscription {
            instance,
            enable: false,
            id: String::new(),
            recipient: caller.endpoint_id.clone(),
            notif_type: String::new(),
            reference_list: Vec::new(),
            persistent: false,
            creation_date: rfc3339(now_secs()),
        };
        let obj_path = format!("Device.LocalAgent.Subscription.{instance}.");
        let mut param_errs = Vec::new();
        for (name, value, required) in &o.params {
            match check_param(hit.desc, name, value).and_then(|_| check_sub_value(name, value)) {
                Ok(()) => apply_sub_param(&mut sub, name, value),
                Err(err) => {
                    let pe = ParamError {
                        path: format!("{obj_path}{name}"),
                        err: err.clone(),
                    };
                    if *required {
                        return Err((err, vec![pe]));
                    }
                    param_errs.push(pe);
                }
            }
        }
        if sub.id.is_empty() {
            sub.id = format!("cpv-{instance}");
        }
        if self
            .subs
            .iter()
            .any(|s| s.id == sub.id && s.recipient == sub.recipient)
        {
            return Err((
                UspError::new(
                    DUPLICATE_KEY,
                    format!("subscription ID {:?} exists for this controller", sub.id),
                ),
                Vec::new(),
            ));
        }
        let unique_keys = vec![
            ("ID".to_string(), sub.id.clone()),
            (
                "Recipient".to_string(),
                self.controller_path(&sub.recipient),
            ),
        ];
        self.subs.push(sub);
        self.save_subs().map_err(|f| (fault_err(f), Vec::new()))?;
        Ok(Created {
            instantiated_path: obj_path,
            param_errs,
            unique_keys,
        })
    }

    /// USP Delete of the instances `paths` match; all or nothing unless `allow_partial`.
    pub fn delete(
        &mut self,
        paths: &[String],
        allow_partial: bool,
    ) -> Result<Vec<DeleteResult>, RequestError> {
        self.touched = true;
        let tree = self.materialize();
        let mut plans = Vec::new();
        for p in paths {
            plans.push((p, plan_delete(&tree, p)));
        }
        if !allow_partial {
            if let Some((_, Err(e))) = plans.iter().find(|(_, r)| r.is_err()) {
                return Err(RequestError {
                    err: e.clone(),
                    param_errs: Vec::new(),
                });
            }
        }
        let mut out = Vec::new();
        for (p, plan) in plans {
            let outcome = plan.map(|victims| {
                let paths: Vec<String> = victims
                    .iter()
                    .map(|n| format!("Device.LocalAgent.Subscription.{n}."))
                    .collect();
                self.subs.retain(|s| !victims.contains(&s.instance));
                paths
            });
            out.push(DeleteResult {
                requested_path: p.clone(),
                outcome,
            });
        }
        if let Err(f) = self.save_subs() {
            crate::log_warn!("usp: subscriptions not saved: {f}");
        }
        Ok(out)
    }
}

fn plan_delete(tree: &Tree, p: &str) -> Result<Vec<u32>, UspError> {
    let path = Path::parse(p)?;
    let hit = tree::schema_of(&path)?;
    if path.leaf != Leaf::Object || !hit.desc.multi || hit.table {
        return Err(UspError::new(
            NOT_A_TABLE,
            format!("{p}: not an instance of a table"),
        ));
    }
    if !hit.desc.creatable {
        return Err(UspError::new(
            DELETE_FAILURE,
            format!("{p}: controllers cannot delete {}", hit.desc.name),
        ));
    }
    // A path that names nothing deletes nothing (TR-369: not an error).
    Ok(tree
        .resolve(&path)
        .iter()
        .filter_map(|o| o.instance())
        .collect())
}
