//! A small validator of JSON values against BTCPay's OpenAPI 3.0 schemas (the subset those
//! documents use: `$ref`, `allOf`, `anyOf`, `type`, `nullable`, `enum`, `properties`,
//! `required`, `additionalProperties`, `items`, `format: decimal`), and the documents
//! themselves, merged.
//!
//! One reading the documents need: BTCPay composes objects with `allOf` and puts
//! `additionalProperties: false` on one part; read literally (JSON Schema), that part would
//! refuse the other parts' properties and no real invoice would validate. As OpenAPI
//! generators do, an `allOf` is merged first (properties and `required` united, closed if any
//! part is closed) and the merged object is checked.

#![allow(dead_code, clippy::missing_panics_doc)]

use serde_json::{Map, Value};

/// BTCPay's documents, merged: every path, component schema and parameter, and the
/// `x-webhooks` of the webhooks document.
pub struct Spec {
    paths: Map<String, Value>,
    schemas: Map<String, Value>,
    parameters: Map<String, Value>,
    webhooks: Map<String, Value>,
}

const DOCUMENTS: [&str; 3] = [
    include_str!("../../fixtures/greenfield.base.json"),
    include_str!("../../fixtures/greenfield.invoices.json"),
    include_str!("../../fixtures/greenfield.webhooks.json"),
];

fn object(value: &Value, key: &str) -> Map<String, Value> {
    value
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

impl Spec {
    /// Loads the copied documents.
    pub fn load() -> Self {
        let mut spec = Self {
            paths: Map::new(),
            schemas: Map::new(),
            parameters: Map::new(),
            webhooks: Map::new(),
        };
        for text in DOCUMENTS {
            let doc: Value = serde_json::from_str(text).expect("an OpenAPI document");
            spec.paths.extend(object(&doc, "paths"));
            let components = doc.get("components").cloned().unwrap_or_default();
            spec.schemas.extend(object(&components, "schemas"));
            spec.parameters.extend(object(&components, "parameters"));
            spec.webhooks.extend(object(&doc, "x-webhooks"));
        }
        spec
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut current = schema;
        for _ in 0..32 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let name = reference.rsplit('/').next().unwrap_or_default();
                    let table = if reference.contains("/parameters/") {
                        &self.parameters
                    } else {
                        &self.schemas
                    };
                    current = table
                        .get(name)
                        .unwrap_or_else(|| panic!("unresolved {reference}"));
                }
                None => return current,
            }
        }
        panic!("$ref loop")
    }

    /// `schema` with its `$ref` resolved and its `allOf` merged into one schema.
    fn flatten(&self, schema: &Value) -> Map<String, Value> {
        let schema = self.resolve(schema);
        let mut merged: Map<String, Value> = schema.as_object().cloned().unwrap_or_default();
        let parts = merged.remove("allOf");
        let mut properties: Map<String, Value> = object(schema, "properties");
        let mut required: Vec<Value> = schema
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        for part in parts
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let part = self.flatten(part);
            for (name, property) in part
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                properties.insert(name.clone(), property.clone());
            }
            required.extend(
                part.get("required")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            closed |= part.get("additionalProperties") == Some(&Value::Bool(false));
            for (key, value) in part {
                if !matches!(
                    key.as_str(),
                    "properties" | "required" | "additionalProperties" | "description"
                ) {
                    // The outer schema's own words win (e.g. `nullable: true` beside an allOf).
                    merged.entry(key).or_insert(value);
                }
            }
        }
        if !properties.is_empty() {
            merged.insert("properties".into(), Value::Object(properties));
        }
        if !required.is_empty() {
            merged.insert("required".into(), Value::Array(required));
        }
        if closed {
            merged.insert("additionalProperties".into(), Value::Bool(false));
        }
        merged
    }

    /// Every way `value` breaks `schema`, as `path: what` lines.
    pub fn check(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.walk(value, schema, "$", &mut errors);
        errors
    }

    fn walk(&self, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.flatten(schema);
        if value.is_null() {
            if schema.get("nullable") != Some(&Value::Bool(true))
                && !schema.is_empty()
                && schema.get("type").is_some()
            {
                errors.push(format!("{at}: null where the schema is not nullable"));
            }
            return;
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(|s| self.check(value, s).is_empty())
        {
            errors.push(format!("{at}: matches none of anyOf"));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        let kind = schema
            .get("type")
            .and_then(Value::as_str)
            .or_else(|| schema.get("properties").map(|_| "object"));
        match kind {
            Some("string") => match value.as_str() {
                None => errors.push(format!("{at}: expected a string, got {value}")),
                Some(text) => {
                    if schema.get("format").and_then(Value::as_str) == Some("decimal")
                        && !is_decimal(text)
                    {
                        errors.push(format!("{at}: {text:?} is not a decimal"));
                    }
                }
            },
            Some("number") => {
                if !value.is_number() {
                    errors.push(format!("{at}: expected a number, got {value}"));
                } else if schema.get("format").and_then(Value::as_str) == Some("int32")
                    && !(value.is_i64() || value.is_u64())
                {
                    errors.push(format!("{at}: expected a whole number, got {value}"));
                }
            }
            Some("integer") if !(value.is_i64() || value.is_u64()) => {
                errors.push(format!("{at}: expected an integer, got {value}"));
            }
            Some("boolean") if !value.is_boolean() => {
                errors.push(format!("{at}: expected a boolean, got {value}"));
            }
            Some("array") => match value.as_array() {
                None => errors.push(format!("{at}: expected an array, got {value}")),
                Some(items) => {
                    if let Some(item_schema) = schema.get("items") {
                        for (i, item) in items.iter().enumerate() {
                            self.walk(item, item_schema, &format!("{at}[{i}]"), errors);
                        }
                    }
                }
            },
            Some("object") => match value.as_object() {
                None => errors.push(format!("{at}: expected an object, got {value}")),
                Some(fields) => self.walk_object(fields, &schema, at, errors),
            },
            _ => {}
        }
    }

    fn walk_object(
        &self,
        fields: &Map<String, Value>,
        schema: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                errors.push(format!("{at}: missing required {name}"));
            }
        }
        for (name, field) in fields {
            match properties.get(name) {
                Some(property) => self.walk(field, property, &format!("{at}.{name}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: field {name} is not in the schema"));
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.walk(field, extra, &format!("{at}.{name}"), errors);
                    }
                    _ => {}
                },
            }
        }
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        self.paths
            .get(template)
            .and_then(|p| p.get(method.to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("{method} {template} is not in BTCPay's documents"))
    }

    /// The path template of BTCPay's documents that `path` is an instance of.
    pub fn template(&self, method: &str, path: &str) -> String {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.paths
            .iter()
            .filter(|(_, item)| item.get(method.to_ascii_lowercase()).is_some())
            .map(|(template, _)| template)
            .find(|template| {
                let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
                parts.len() == segments.len()
                    && parts
                        .iter()
                        .zip(&segments)
                        .all(|(p, s)| p.starts_with('{') || p == s)
            })
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path} matches no documented path"))
    }

    /// Checks a response of `method path` with `status` and `body`. Where the documents
    /// name an error status without a body schema (403, 404), or none at all (401 on most
    /// operations), BTCPay answers `ProblemDetails`; that is what is checked.
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Vec<String> {
        let template = self.template(method, path);
        let responses = self
            .operation(method, &template)
            .get("responses")
            .cloned()
            .unwrap_or_default();
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
            .cloned()
            .unwrap_or_else(|| {
                // Auth failures (401) are documented once, globally, not per operation.
                assert!(status >= 400, "{method} {template} documents no {status}");
                Value::Null
            });
        let schema = response
            .pointer("/content/application~1json/schema")
            .cloned()
            .unwrap_or_else(|| {
                assert!(
                    status >= 400,
                    "{method} {template} {status} has no documented body"
                );
                serde_json::json!({ "$ref": "#/components/schemas/ProblemDetails" })
            });
        self.check(body, &schema)
            .into_iter()
            .map(|e| format!("{method} {template} {status}: {e}"))
            .collect()
    }

    /// Checks a request: its query parameters against the documented ones and its body
    /// against the documented request body.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Vec<String> {
        let template = self.template(method, path);
        let operation = self.operation(method, &template);
        let mut errors = Vec::new();
        let mut parameters: Vec<Value> = Vec::new();
        for list in [
            self.paths.get(&template).and_then(|p| p.get("parameters")),
            operation.get("parameters"),
        ] {
            for parameter in list.and_then(Value::as_array).into_iter().flatten() {
                parameters.push(self.resolve(parameter).clone());
            }
        }
        for (name, text) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let Some(parameter) = parameters
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == name.as_ref())
            else {
                errors.push(format!(
                    "{method} {template}: query parameter {name} is not documented"
                ));
                continue;
            };
            let mut schema = self.flatten(&parameter["schema"]);
            if schema.get("type").and_then(Value::as_str) == Some("array") {
                schema = self.flatten(&schema["items"].clone());
            }
            let value = match schema.get("type").and_then(Value::as_str) {
                Some("number" | "integer") => text
                    .parse::<i64>()
                    .map_or(Value::String(text.to_string()), Value::from),
                Some("boolean") => text
                    .parse::<bool>()
                    .map_or(Value::String(text.to_string()), Value::from),
                _ => Value::String(text.to_string()),
            };
            errors.extend(
                self.check(&value, &Value::Object(schema))
                    .into_iter()
                    .map(|e| format!("{method} {template} ?{name}: {e}")),
            );
        }
        match operation.pointer("/requestBody/content/application~1json/schema") {
            Some(schema) => match serde_json::from_slice::<Value>(body) {
                Ok(value) => errors.extend(
                    self.check(&value, schema)
                        .into_iter()
                        .map(|e| format!("{method} {template} body: {e}")),
                ),
                Err(_) => errors.push(format!("{method} {template}: the body is not JSON")),
            },
            None if !body.is_empty() => errors.push(format!(
                "{method} {template}: a body where none is documented"
            )),
            None => {}
        }
        errors
    }

    /// Checks a webhook delivery's body against the `x-webhooks` entry of its `type`.
    pub fn check_delivery(&self, body: &Value) -> Vec<String> {
        let kind = body["type"].as_str().unwrap_or_default();
        let schema = self
            .webhooks
            .get(kind)
            .and_then(|w| w.pointer("/post/requestBody/content/application~1json/schema"))
            .unwrap_or_else(|| panic!("webhook {kind} is not documented"));
        self.check(body, schema)
            .into_iter()
            .map(|e| format!("webhook {kind}: {e}"))
            .collect()
    }

    /// Checks `value` against the component schema `name`.
    pub fn check_named(&self, value: &Value, name: &str) -> Vec<String> {
        self.check(
            value,
            &serde_json::json!({ "$ref": format!("#/components/schemas/{name}") }),
        )
    }
}

fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}
