//! The operator's network override (`X_CPEVISOR_NetworkConfig` of InstallDU and Update, see
//! agent/README.md "The operator's section at install"): what the controller accepts as one,
//! whoever gives it (the one-shot `install`/`update --network`, `deploy --network`, the HTTP
//! API's `network` field). The controller checks its shape only; the agent checks the fields
//! and names a bad one.

use std::path::Path;

use crate::config::read_bounded;

/// The agent's limit on the argument: a longer one would be refused by every agent.
pub const MAX_BYTES: usize = 8 << 10;

/// An override as the controller sends and stores it: `text` must be a JSON object (the
/// section) or `null` (the package's own section, any override dropped), at most
/// [`MAX_BYTES`]. Returns it compact.
pub fn check(text: &str) -> Result<String, String> {
    let v = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Null)) => v,
        Ok(_) => return Err("not a JSON object (or null)".into()),
        Err(e) => return Err(format!("not JSON: {e}")),
    };
    let compact = v.to_string();
    if compact.len() > MAX_BYTES {
        return Err(format!(
            "{} bytes, more than the agent's {MAX_BYTES}",
            compact.len()
        ));
    }
    Ok(compact)
}

/// `--network`'s value: JSON as given (an object or `null`), otherwise the file it names; then
/// [`check`]ed.
pub fn arg(v: &str) -> Result<String, String> {
    let t = v.trim_start();
    let text = if t.starts_with('{') || t == "null" {
        v.to_string()
    } else {
        read_bounded(Path::new(v), "--network file")?
    };
    check(&text).map_err(|e| format!("--network: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_null_only_compact_and_bounded() {
        assert_eq!(
            check("{ \"mode\" : \"none\" }").unwrap(),
            r#"{"mode":"none"}"#
        );
        assert_eq!(check(" null ").unwrap(), "null");
        assert!(check("[1]").unwrap_err().contains("not a JSON object"));
        assert!(check("{\"mode\":").unwrap_err().starts_with("not JSON"));
        let big = format!(r#"{{"x": "{}"}}"#, "a".repeat(MAX_BYTES));
        assert!(check(&big)
            .unwrap_err()
            .contains("more than the agent's 8192"));
        assert!(arg("{\"mode\":")
            .unwrap_err()
            .starts_with("--network: not JSON"));
        assert!(arg("/nonexistent/net.json")
            .unwrap_err()
            .starts_with("--network file /nonexistent/net.json"));
        let f = std::env::temp_dir().join(format!("cpv-net-{}.json", std::process::id()));
        std::fs::write(&f, "{\"mode\": \"nat\"}\n").unwrap();
        assert_eq!(arg(f.to_str().unwrap()).unwrap(), r#"{"mode":"nat"}"#);
        std::fs::write(&f, "3").unwrap();
        assert!(arg(f.to_str().unwrap())
            .unwrap_err()
            .contains("not a JSON object"));
        let _ = std::fs::remove_file(&f);
    }
}
