//! `--config switchboard.toml`: a file with the same keys as the flags
//! (`max-payload-bytes = 2000000`, `cors-origin = ["https://a.example"]`).
//!
//! Precedence is file < environment < flags. The file is read before the
//! command line is parsed and each key becomes its `SWITCHBOARD_*` variable
//! unless that variable is already set; clap then does the rest, so the
//! file, the environment and the flags share one set of names, defaults and
//! validation. An unknown key is an error: a typo must not pass silently.

use std::ffi::OsString;
use std::path::PathBuf;

/// The `--config` path among the process arguments (`--config F` or
/// `--config=F`), else `SWITCHBOARD_CONFIG`.
pub fn path_from_args(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("SWITCHBOARD_CONFIG").map(PathBuf::from)
}

/// The environment variables that the file `text` stands for. `flags` maps
/// each flag's long name to its environment variable.
pub fn env_pairs(text: &str, flags: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in table {
        let Some((_, env)) = flags.iter().find(|(long, _)| *long == key) else {
            return Err(format!(
                "unknown key '{key}' (keys are the flags' names, as in --help)"
            ));
        };
        if env == "SWITCHBOARD_CONFIG" {
            return Err("'config' cannot be set in a config file".into());
        }
        out.push((env.clone(), flat(&key, &value)?));
    }
    Ok(out)
}

/// One value as the flag would take it; arrays are comma-separated, as the
/// repeatable flags' variables are.
fn flat(key: &str, value: &toml::Value) -> Result<String, String> {
    use toml::Value::*;
    Ok(match value {
        String(s) => s.clone(),
        Integer(i) => i.to_string(),
        Float(f) => f.to_string(),
        Boolean(b) => b.to_string(),
        Array(items) => items
            .iter()
            .map(|v| match v {
                Array(_) | Table(_) => Err(format!("'{key}': nested lists are not allowed")),
                v => flat(key, v),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        Datetime(d) => d.to_string(),
        Table(_) => return Err(format!("'{key}': tables are not allowed")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Vec<(String, String)> {
        [
            ("max-payload-bytes", "SWITCHBOARD_MAX_PAYLOAD_BYTES"),
            ("cors-origin", "SWITCHBOARD_CORS_ORIGIN"),
            ("listen", "SWITCHBOARD_LISTEN"),
            ("config", "SWITCHBOARD_CONFIG"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn keys_become_variables() {
        let text = r#"
            listen = "0.0.0.0:3000"
            max-payload-bytes = 2000000
            cors-origin = ["https://a.example", "https://b.example"]
        "#;
        let mut pairs = env_pairs(text, &flags()).unwrap();
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                (
                    "SWITCHBOARD_CORS_ORIGIN".into(),
                    "https://a.example,https://b.example".into()
                ),
                ("SWITCHBOARD_LISTEN".into(), "0.0.0.0:3000".into()),
                ("SWITCHBOARD_MAX_PAYLOAD_BYTES".into(), "2000000".into()),
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_shapes_are_errors() {
        assert!(
            env_pairs("max-payload = 1", &flags())
                .unwrap_err()
                .contains("unknown key 'max-payload'")
        );
        assert!(env_pairs("config = \"x\"", &flags()).is_err());
        assert!(env_pairs("listen = { a = 1 }", &flags()).is_err());
        assert!(env_pairs("listen = [[1]]", &flags()).is_err());
        assert!(env_pairs("listen = ", &flags()).is_err());
    }

    #[test]
    fn the_path_comes_from_the_flag() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            path_from_args(&args(&["sb", "--listen", "x", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            path_from_args(&args(&["sb", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
