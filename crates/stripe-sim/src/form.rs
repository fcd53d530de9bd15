//! Stripe's request encoding: `application/x-www-form-urlencoded` with bracketed keys
//! (`line_items[0][price_data][currency]=usd`, `expand[]=x`), decoded into nested JSON so
//! handlers read parameters like the objects they describe. Every leaf is a string, as on
//! the wire; handlers parse numbers and booleans where Stripe does.

use serde_json::{Map, Value};

/// Decodes a form body or query string into nested JSON objects and arrays.
pub fn decode(encoded: &[u8]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in url::form_urlencoded::parse(encoded) {
        let path = split_key(&key);
        insert(&mut root, &path, Value::String(value.into_owned()));
    }
    arrays_from_indices(root)
}

/// `a[b][0]` → `["a", "b", "0"]`; `expand[]` → `["expand", ""]`.
fn split_key(key: &str) -> Vec<String> {
    let (head, rest) = key.split_once('[').unwrap_or((key, ""));
    let mut path = vec![head.to_owned()];
    if !rest.is_empty() {
        let inner = rest.strip_suffix(']').unwrap_or(rest);
        path.extend(inner.split("][").map(str::to_owned));
    }
    path
}

fn insert(node: &mut Value, path: &[String], leaf: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let Value::Object(map) = node else { return };
    // An empty segment appends: `expand[]=a&expand[]=b`.
    let key = if first.is_empty() {
        map.len().to_string()
    } else {
        first.clone()
    };
    if rest.is_empty() {
        map.insert(key, leaf);
    } else {
        insert(map.entry(key).or_insert(Value::Null), rest, leaf);
    }
}

/// Objects whose keys are all indices become arrays, in index order.
fn arrays_from_indices(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let all_indices = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if all_indices {
                let mut items: Vec<(usize, Value)> = map
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, arrays_from_indices(v))))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(
                    map.into_iter()
                        .map(|(k, v)| (k, arrays_from_indices(v)))
                        .collect(),
                )
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn bracketed_keys_become_nested_objects_and_arrays() {
        let form = "mode=subscription&line_items[0][price_data][currency]=usd\
            &line_items[0][price_data][unit_amount]=500&line_items[0][quantity]=1\
            &line_items[0][price_data][recurring][interval]=month\
            &metadata[contribution_id]=abc&expand[]=customer&expand[]=invoice\
            &success_url=https%3A%2F%2Fnews.example.org%2Fthanks%3Fx%3D1";
        assert_eq!(
            super::decode(form.as_bytes()),
            json!({
                "mode": "subscription",
                "line_items": [{"price_data": {"currency": "usd", "unit_amount": "500", "recurring": {"interval": "month"}}, "quantity": "1"}],
                "metadata": {"contribution_id": "abc"},
                "expand": ["customer", "invoice"],
                "success_url": "https://news.example.org/thanks?x=1"
            })
        );
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        assert_eq!(super::decode(b""), json!({}));
    }
}
