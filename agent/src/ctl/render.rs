//! Human output of cpevisorctl: aligned tables, a one-line progress bar, fault lines.

use std::io::Write;

use serde_json::Value;

use crate::api::{Progress, Request};
use crate::fault::Fault;

pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(2) == 1 }
}

/// Prints `error <code>: <message>` and returns the exit code for a fault.
pub fn print_fault(f: &Fault) -> i32 {
    eprintln!("error {}: {}", f.code.code(), f.message);
    1
}

pub struct ProgressBar {
    enabled: bool,
    drawn: bool,
}

impl ProgressBar {
    pub fn new(enabled: bool) -> Self {
        ProgressBar {
            enabled,
            drawn: false,
        }
    }

    pub fn update(&mut self, p: &Progress) {
        if !self.enabled {
            return;
        }
        let mib = p.bytes as f64 / 1048576.0;
        let line = match p.total.filter(|t| *t > 0) {
            Some(t) => {
                let frac = (p.bytes as f64 / t as f64).min(1.0);
                let filled = (frac * 30.0) as usize;
                format!(
                    "\r[{}{}] {:5.1}% {mib:.1}/{:.1} MiB",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    frac * 100.0,
                    t as f64 / 1048576.0
                )
            }
            None => format!("\rdownloading {mib:.1} MiB"),
        };
        let mut err = std::io::stderr();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as columns padded to the widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn du_rows(dus: &[Value]) -> Vec<Vec<String>> {
    dus.iter()
        .map(|d| {
            vec![
                s(&d["uuid"]),
                s(&d["name"]),
                s(&d["version"]),
                s(&d["vendor"]),
                s(&d["status"]),
                s(&d["exec_env"]),
                d["execution_unit_list"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

fn eu_rows(eus: &[Value]) -> Vec<Vec<String>> {
    eus.iter()
        .map(|e| {
            let fault = s(&e["execution_fault_code"]);
            let msg = s(&e["execution_fault_message"]);
            vec![
                s(&e["eu_id"]),
                s(&e["name"]),
                s(&e["status"]),
                s(&e["requested_state"]),
                s(&e["memory_mib"]),
                s(&e["memory_in_use"]),
                s(&e["disk_in_use"]),
                s(&e["auto_restart"]["retry_count"]),
                if msg.is_empty() || msg == "-" {
                    fault
                } else {
                    format!("{fault}: {msg}")
                },
                health_cell(&e["health"]),
            ]
        })
        .collect()
}

/// The last health probe: `ok at <time>`, `failing at <time>: <message>`, or `-` (no probe).
fn health_cell(h: &Value) -> String {
    if h.is_null() {
        return "-".into();
    }
    let state = s(&h["state"]);
    match state.as_str() {
        "ok" => format!("ok at {}", s(&h["time"])),
        _ => format!("{state} at {}: {}", s(&h["time"]), s(&h["message"])),
    }
}

const DU_HEADERS: [&str; 7] = ["UUID", "NAME", "VERSION", "VENDOR", "STATUS", "ENV", "EUS"];
const EU_HEADERS: [&str; 10] = [
    "EUID",
    "NAME",
    "STATUS",
    "REQUESTED",
    "MEM_MIB",
    "IN_USE_KIB",
    "DISK_KIB",
    "RETRIES",
    "FAULT",
    "HEALTH",
];

fn empty() -> Vec<Value> {
    Vec::new()
}

pub fn print_result(req: &Request, v: &Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    match req {
        Request::List {} => {
            let envs = v["exec_envs"].as_array().cloned().unwrap_or_else(empty);
            table(
                &[
                    "EXECENV",
                    "TYPE",
                    "ARCH",
                    "STATUS",
                    "BUDGET_MIB",
                    "AVAILABLE_MIB",
                    "DISK_KIB",
                    "DISK_FREE_KIB",
                ],
                &envs
                    .iter()
                    .map(|e| {
                        vec![
                            s(&e["name"]),
                            s(&e["type"]),
                            s(&e["arch"]),
                            s(&e["status"]),
                            s(&e["memory_budget_mib"]),
                            s(&e["available_memory_mib"]),
                            s(&e["allocated_disk_kib"]),
                            s(&e["available_disk_kib"]),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            println!();
            let dus = v["deployment_units"]
                .as_array()
                .cloned()
                .unwrap_or_else(empty);
            table(&DU_HEADERS, &du_rows(&dus));
            println!();
            let eus = v["execution_units"]
                .as_array()
                .cloned()
                .unwrap_or_else(empty);
            table(&EU_HEADERS, &eu_rows(&eus));
        }
        Request::Status { .. } => {
            if v.get("deployment_unit").is_some() {
                table(
                    &DU_HEADERS,
                    &du_rows(std::slice::from_ref(&v["deployment_unit"])),
                );
                println!();
                let eus = v["execution_units"]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(empty);
                table(&EU_HEADERS, &eu_rows(&eus));
            } else {
                table(
                    &EU_HEADERS,
                    &eu_rows(std::slice::from_ref(&v["execution_unit"])),
                );
            }
        }
        Request::Install { .. } | Request::Update { .. } => {
            println!(
                "{} {} {} ({})",
                s(&v["status"]),
                s(&v["name"]),
                s(&v["version"]),
                s(&v["uuid"])
            );
            println!(
                "execution units: {}",
                du_rows(std::slice::from_ref(v))[0][6]
            );
        }
        Request::Uninstall { .. } => println!("uninstalled {}", s(&v["uuid"])),
        Request::Start { .. } | Request::Stop { .. } | Request::Restart { .. } => {
            table(&EU_HEADERS, &eu_rows(std::slice::from_ref(v)));
        }
        Request::Logs { .. } => print!("{}", v["log"].as_str().unwrap_or("")),
        Request::Events { .. } => {
            for e in v.as_array().cloned().unwrap_or_else(empty) {
                let seq = s(&e["seq"]);
                match e["kind"].as_str() {
                    Some("DUStateChange!") => {
                        let fault = match e["fault"].is_null() {
                            true => String::new(),
                            false => format!(
                                " fault {}: {}",
                                s(&e["fault"]["code"]),
                                s(&e["fault"]["message"])
                            ),
                        };
                        println!(
                            "{seq:>4} {} DUStateChange! {:?} {} {} -> {}{fault}",
                            s(&e["complete_time"]),
                            e["operation_performed"].as_str().unwrap_or("?"),
                            s(&e["uuid"]),
                            s(&e["version"]),
                            s(&e["current_state"]),
                        );
                    }
                    _ => println!(
                        "{seq:>4} {} {} Status={} Fault={} {}",
                        s(&e["time"]),
                        s(&e["eu_id"]),
                        s(&e["status"]),
                        s(&e["execution_fault_code"]),
                        e["execution_fault_message"].as_str().unwrap_or("")
                    ),
                }
            }
        }
        Request::Reset { .. } => println!("uninstalled {}", v["uninstalled"]),
        Request::SetEnvEnable { .. } => {
            println!("ExecEnv {} is {}", s(&v["name"]), s(&v["status"]))
        }
    }
}
