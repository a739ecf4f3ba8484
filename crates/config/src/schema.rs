//! Structural checks of a manifest against its CRD's OpenAPI schema: unknown
//! fields, types, enum values, required fields, lengths and bounds. Unlike
//! typed deserialization, which stops at the first error, this reports every
//! problem of an object, phrased as kubectl phrases them. Pure.

use serde_json::Value;

/// One problem at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `spec.backends[0].weight`.
    pub field: String,
    pub message: String,
    /// A wrong type or a missing required field: the object's shape is not
    /// what CEL rules expect, so they are not worth evaluating.
    pub structural: bool,
}

/// Checks `value` (a whole object) against `schema` (the CRD version's
/// `openAPIV3Schema`). `apiVersion`, `kind` and `metadata` are the
/// apiserver's business, not the schema's, and `status` is ignored on
/// create and update (a status subresource): all are skipped.
pub fn check(schema: &Value, value: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(object) = value.as_object() else {
        return problems;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for (key, child) in object {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            continue;
        }
        match properties.and_then(|p| p.get(key)) {
            Some(child_schema) => walk(child_schema, child, key, &mut problems),
            None => problems.push(unknown_field(key, key)),
        }
    }
    required(schema, object, "", &mut problems);
    problems
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
    let flag = |name: &str| schema.get(name).and_then(Value::as_bool) == Some(true);
    if value.is_null() {
        if !flag("nullable") && schema.get("type").is_some() {
            out.push(type_mismatch(path, value, schema));
        }
        return;
    }
    if flag("x-kubernetes-int-or-string") {
        if !(value.is_string() || is_integer(value)) {
            out.push(Problem {
                field: path.to_string(),
                message: format!(
                    "Invalid value: {:?}: must be an integer or a string",
                    type_name(value)
                ),
                structural: true,
            });
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !has_type(value, expected)
    {
        out.push(type_mismatch(path, value, schema));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        // An optional enum lists null, which is no value to suggest.
        let supported: Vec<String> = allowed
            .iter()
            .filter(|v| !v.is_null())
            .map(Value::to_string)
            .collect();
        out.push(Problem {
            field: path.to_string(),
            message: format!(
                "Unsupported value: {value}: supported values: {}",
                supported.join(", ")
            ),
            structural: false,
        });
    }
    match value {
        Value::Object(object) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in object {
                let field = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(child_schema), _) | (None, Some(child_schema)) => {
                        walk(child_schema, child, &field, out)
                    }
                    (None, None) if flag("x-kubernetes-preserve-unknown-fields") => {}
                    // A schema with neither lists no fields to check against.
                    (None, None) if properties.is_none() => {}
                    (None, None) => out.push(unknown_field(&field, key)),
                }
            }
            required(schema, object, path, out);
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                out.push(Problem {
                    field: path.to_string(),
                    message: format!("Too many: {}: must have at most {max} items", items.len()),
                    structural: false,
                });
            }
            duplicates(schema, items, path, out);
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{index}]"), out);
                }
            }
        }
        Value::String(text) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && text.chars().count() as u64 > max
            {
                out.push(Problem {
                    field: path.to_string(),
                    message: format!("Too long: may not be more than {max} bytes"),
                    structural: false,
                });
            }
        }
        Value::Number(number) => {
            let Some(n) = number.as_f64() else { return };
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                out.push(Problem {
                    field: path.to_string(),
                    message: format!(
                        "Invalid value: {number}: should be greater than or equal to {}",
                        bound(min)
                    ),
                    structural: false,
                });
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                out.push(Problem {
                    field: path.to_string(),
                    message: format!(
                        "Invalid value: {number}: should be less than or equal to {}",
                        bound(max)
                    ),
                    structural: false,
                });
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// `x-kubernetes-list-type: set` items, and `map` items' keys, must be unique.
fn duplicates(schema: &Value, items: &[Value], path: &str, out: &mut Vec<Problem>) {
    let keys: Vec<&str> = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => Vec::new(),
        Some("map") => schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        _ => return,
    };
    let identity = |item: &Value| -> Value {
        if keys.is_empty() {
            return item.clone();
        }
        let fields = keys
            .iter()
            .filter_map(|k| Some(((*k).to_string(), item.get(*k)?.clone())));
        Value::Object(fields.collect())
    };
    let mut seen: Vec<Value> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let id = identity(item);
        if seen.contains(&id) {
            out.push(Problem {
                field: format!("{path}[{index}]"),
                message: format!("Duplicate value: {id}"),
                structural: false,
            });
        }
        seen.push(id);
    }
}

fn required(
    schema: &Value,
    object: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<Problem>,
) {
    let Some(required) = schema.get("required").and_then(Value::as_array) else {
        return;
    };
    for name in required.iter().filter_map(Value::as_str) {
        if !object.contains_key(name) {
            out.push(Problem {
                field: join(path, name),
                message: "Required value".into(),
                structural: true,
            });
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn unknown_field(path: &str, key: &str) -> Problem {
    Problem {
        field: path.to_string(),
        message: format!("unknown field {key:?}"),
        structural: false,
    }
}

fn type_mismatch(path: &str, value: &Value, schema: &Value) -> Problem {
    let expected = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    Problem {
        field: path.to_string(),
        message: format!(
            "Invalid value: {:?}: must be of type {expected}",
            type_name(value)
        ),
        structural: true,
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// Written without a fraction: typed decoding refuses 3.0 for an integer, and so does the apiserver.
fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `0` rather than `0.0` for whole bounds, as kubectl prints them.
fn bound(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "required": ["type", "backends"],
                    "properties": {
                        "type": {"type": "string", "enum": ["OpenAI", "Anthropic", null], "nullable": true},
                        "name": {"type": "string", "maxLength": 3},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "quantity": {"x-kubernetes-int-or-string": true},
                        "note": {"type": "string", "nullable": true},
                        "backends": {
                            "type": "array",
                            "maxItems": 2,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "weight": {"type": "integer", "minimum": 0},
                                    "model": {"type": "string"}
                                }
                            }
                        }
                    }
                }
            }
        })
    }

    /// Sorted: map order depends on serde_json's features.
    fn messages(value: Value) -> Vec<String> {
        let mut text: Vec<String> = check(&schema(), &value)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        text.sort();
        text
    }

    #[test]
    fn a_valid_object_has_no_problems() {
        let value = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "status": {"x": 1},
            "spec": {"type": "OpenAI", "labels": {"a": "b"}, "quantity": "1Gi", "note": null,
                     "backends": [{"weight": 3, "model": "m"}]}});
        assert_eq!(messages(value), Vec::<String>::new());
    }

    #[test]
    fn every_unknown_field_is_reported() {
        let value = json!({"spec": {"type": "OpenAI", "tpye": 1,
            "backends": [{"wieght": 3}, {"modle": "m"}]}, "extra": {}});
        assert_eq!(
            messages(value),
            [
                "extra: unknown field \"extra\"",
                "spec.backends[0].wieght: unknown field \"wieght\"",
                "spec.backends[1].modle: unknown field \"modle\"",
                "spec.tpye: unknown field \"tpye\"",
            ]
        );
    }

    #[test]
    fn enum_values_are_reported_as_kubectl_does() {
        let value = json!({"spec": {"type": "openai", "backends": []}});
        assert_eq!(
            messages(value),
            [
                "spec.type: Unsupported value: \"openai\": supported values: \"OpenAI\", \"Anthropic\""
            ]
        );
    }

    #[test]
    fn list_maps_and_sets_refuse_duplicates() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "models": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                       "items": {"type": "object", "properties": {"name": {"type": "string"}, "price": {"type": "number"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
        }}}});
        let value = json!({"spec": {"models": [{"name": "a", "price": 1}, {"name": "b"}, {"name": "a", "price": 2}],
                                    "tags": ["x", "y", "x"]}});
        let mut text: Vec<String> = check(&schema, &value)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        text.sort();
        assert_eq!(
            text,
            [
                "spec.models[2]: Duplicate value: {\"name\":\"a\"}",
                "spec.tags[2]: Duplicate value: \"x\"",
            ]
        );
    }

    #[test]
    fn types_required_lengths_and_bounds() {
        let value = json!({"spec": {"name": "long", "quantity": [1], "labels": {"a": 1},
            "backends": [{"weight": -1}, {"weight": 1.5}, {}]}});
        let problems = check(&schema(), &value);
        assert_eq!(
            messages(value),
            [
                "spec.backends: Too many: 3: must have at most 2 items",
                "spec.backends[0].weight: Invalid value: -1: should be greater than or equal to 0",
                "spec.backends[1].weight: Invalid value: \"number\": must be of type integer",
                "spec.labels.a: Invalid value: \"integer\": must be of type string",
                "spec.name: Too long: may not be more than 3 bytes",
                "spec.quantity: Invalid value: \"array\": must be an integer or a string",
                "spec.type: Required value",
            ]
        );
        assert!(problems.iter().any(|p| p.structural));
        let name = problems.iter().find(|p| p.field == "spec.name").unwrap();
        assert!(!name.structural, "a length is not a shape problem");
    }
}
