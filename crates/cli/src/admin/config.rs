//! `kopilka admin config`: the effective settings, as the process would run with them.
//! Secrets print as `<redacted>`; this command exists to debug layering without leaking.

use serde_json::Value;

use crate::output::{self, Format};

pub fn run(format: Format) -> anyhow::Result<()> {
    let settings = kopilka_config::load()?;
    let document = serde_json::to_value(&settings)?;
    if format == Format::Json {
        output::line(&serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    flatten("", &document, &mut rows);
    output::rows(format, &["key", "value"], &rows);
    Ok(())
}

/// `{"server":{"addr":"…"}}` → `server.addr = …`, one row per leaf.
fn flatten(prefix: &str, value: &Value, rows: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(fields) => {
            for (key, inner) in fields {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, inner, rows);
            }
        }
        Value::String(text) => rows.push(vec![prefix.to_owned(), text.clone()]),
        Value::Null => rows.push(vec![prefix.to_owned(), String::new()]),
        other => rows.push(vec![prefix.to_owned(), other.to_string()]),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nested_settings_flatten_to_dotted_keys() {
        let mut rows = Vec::new();
        let doc = serde_json::json!({"server": {"addr": "127.0.0.1:8080", "origins": ["a", "b"]}, "x": null});
        super::flatten("", &doc, &mut rows);
        assert_eq!(
            rows,
            vec![
                vec!["server.addr".to_owned(), "127.0.0.1:8080".to_owned()],
                vec!["server.origins".to_owned(), "[\"a\",\"b\"]".to_owned()],
                vec!["x".to_owned(), String::new()],
            ]
        );
    }
}
