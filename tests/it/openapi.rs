//! `docs/openapi.json` against the server: the same routes and methods as the router's table
//! (both ways), served at `/openapi.json`, and every answer the harness gets matches its schema.
//!
//! The schemas are checked by a small validator of the JSON Schema subset the spec uses. It
//! refuses any keyword it does not know, so the spec cannot say something that goes unchecked.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use kairos::api::table::{Kind, routes};
use serde_json::{Value, json};

use crate::Harness;

/// The message of the router's 404 for a path no route serves.
const NO_SUCH_ROUTE: &str = "there is no such route; see docs/compatibility.md for the routes served";

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| serde_json::from_str(kairos::api::OPENAPI).expect("docs/openapi.json is JSON"))
}

/// Follows a local `$ref` (`#/a/b`), with JSON Pointer's escapes.
fn resolve(value: &Value) -> &Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(pointer) => {
            let target = spec()
                .pointer(pointer.strip_prefix('#').expect("a local $ref"))
                .unwrap_or_else(|| panic!("docs/openapi.json: dangling $ref {pointer}"));
            resolve(target)
        }
        None => value,
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("docs/openapi.json: unknown type {other:?}"),
    }
}

/// Why `value` does not match `schema`, if it does not.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let object = schema.as_object().expect("a schema is an object");
    if object.contains_key("$ref") {
        // Keywords beside a $ref would go unchecked here.
        assert_eq!(object.len(), 1, "{at}: $ref beside other keywords");
        return validate(resolve(schema), value, at);
    }
    for keyword in object.keys() {
        assert!(
            matches!(
                keyword.as_str(),
                "type"
                    | "properties"
                    | "required"
                    | "additionalProperties"
                    | "items"
                    | "enum"
                    | "description"
            ),
            "docs/openapi.json uses {keyword:?}, which this validator does not check"
        );
    }
    if let Some(kind) = object.get("type") {
        let kinds: Vec<&str> = match kind {
            Value::String(k) => vec![k.as_str()],
            Value::Array(ks) => ks.iter().filter_map(Value::as_str).collect(),
            _ => panic!("{at}: a type is a string or a list"),
        };
        if !kinds.iter().any(|k| type_matches(k, value)) {
            return Err(format!("{at}: {value} is not of type {kind}"));
        }
    }
    if let Some(allowed) = object.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(fields) = value.as_object() {
        let properties = object.get("properties").and_then(Value::as_object);
        for name in object
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().expect("required names are strings");
            if !fields.contains_key(name) {
                return Err(format!("{at}: the required field {name:?} is missing"));
            }
        }
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => validate(sub, field, &format!("{at}.{name}"))?,
                None if object.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: the field {name:?} is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(elements)) = (object.get("items"), value.as_array()) {
        for (i, element) in elements.iter().enumerate() {
            validate(items, element, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Fails unless `docs/openapi.json` describes this answer: its route, method and status, its
/// content type, and (for JSON) its body. The web UI's pages are not in the spec, by design.
pub(crate) fn check_answer(method: &str, path: &str, status: u16, content_type: &str, body: &str) {
    let path = path.split('?').next().unwrap_or(path);
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let context = format!("{method} {path} answered {status} ({content_type}): {body}");
    let Some(route) = kairos::api::table::route_of(path) else {
        // The router's own 404 for unknown paths: the shared error body.
        assert_eq!(status, 404, "{context}");
        let value: Value = serde_json::from_str(body).expect("a JSON error");
        validate(&json!({"$ref": "#/components/schemas/Error"}), &value, "error")
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        return;
    };
    if route.kind == Kind::Page {
        return;
    }
    let item = resolve(&spec()["paths"][&route.path]);
    let op_method = if method == "HEAD" {
        "get"
    } else {
        &method.to_lowercase()
    };
    let operation = &item[op_method];
    let answer = if operation.is_null() {
        // A method the route does not take: the router answers 405, in the shared error body.
        assert_eq!(
            status, 405,
            "{context}: the spec has no {op_method} on {}",
            route.path
        );
        &spec()["components"]["responses"]["MethodNotAllowed"]
    } else {
        let answer = &operation["responses"][status.to_string()];
        assert!(
            !answer.is_null(),
            "{context}: docs/openapi.json has no {status} for {op_method} {}",
            route.path
        );
        resolve(answer)
    };
    let Some(content) = answer.get("content").and_then(Value::as_object) else {
        assert!(body.is_empty(), "{context}: the spec promises no body");
        return;
    };
    let media = content.get(mime).unwrap_or_else(|| {
        panic!(
            "{context}: the spec lists only {:?}",
            content.keys().collect::<Vec<_>>()
        )
    });
    if mime == "application/json" {
        let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{context}: not JSON: {e}"));
        validate(&media["schema"], &value, "body").unwrap_or_else(|e| panic!("{context}: {e}"));
    }
}

/// The methods a spec path item documents, upper case, with `HEAD` implied by `GET`.
fn spec_methods(item: &Value) -> BTreeSet<String> {
    let mut methods: BTreeSet<String> = resolve(item)
        .as_object()
        .expect("a path item")
        .keys()
        .filter(|k| {
            matches!(
                k.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            )
        })
        .map(|k| k.to_uppercase())
        .collect();
    if methods.contains("GET") {
        methods.insert("HEAD".to_owned());
    }
    methods.insert("OPTIONS".to_owned());
    methods
}

#[test]
fn the_spec_and_the_router_list_the_same_routes_and_methods() {
    let doc = spec();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for route in routes() {
        match route.kind {
            Kind::Api => {
                let item = paths.get(&route.path).unwrap_or_else(|| {
                    panic!("the router serves {} but docs/openapi.json lacks it", route.path)
                });
                let table: BTreeSet<String> = route.methods.split(", ").map(str::to_owned).collect();
                assert_eq!(spec_methods(item), table, "the methods of {}", route.path);
            }
            // The HTML pages are for browsers, not an interface: the spec leaves them out.
            Kind::Page => assert!(
                !paths.contains_key(&route.path),
                "{} is a web UI page, which docs/openapi.json leaves out",
                route.path
            ),
        }
    }
    for path in paths.keys() {
        assert!(
            routes().iter().any(|r| &r.path == path && r.kind == Kind::Api),
            "docs/openapi.json documents {path}, which the router does not serve"
        );
    }
}

#[test]
fn every_ref_resolves_and_every_schema_uses_known_keywords() {
    fn walk(value: &Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(value);
                }
                if let Some(schema) = map.get("schema") {
                    // Checks the keywords, whatever the value.
                    let _ = validate(schema, &Value::Null, "walk");
                }
                map.values().for_each(walk);
            }
            Value::Array(items) => items.iter().for_each(walk),
            _ => {}
        }
    }
    walk(spec());
    for (name, schema) in spec()["components"]["schemas"].as_object().expect("schemas") {
        let _ = validate(schema, &Value::Null, name);
    }
}

#[test]
fn the_validator_refuses_what_the_schemas_do_not_allow() {
    let job = json!({"$ref": "#/components/schemas/Job"});
    assert!(validate(&job, &json!({"name": "a", "cpus": 0.5}), "job").is_ok());
    assert!(validate(&job, &json!({"name": "a", "cpus": "lots"}), "job").is_err());
    assert!(validate(&job, &json!({"cpus": 0.5}), "job").is_err());
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(
        validate(
            &error,
            &json!({"message": "m", "status": "Bad Request", "field": "name"}),
            "e"
        )
        .is_ok()
    );
    assert!(validate(&error, &json!({"message": "m"}), "e").is_err());
    assert!(validate(&error, &json!({"message": "m", "status": "x", "extra": 1}), "e").is_err());
    let task = json!({"$ref": "#/components/schemas/Task"});
    assert!(validate(&task, &json!([]), "task").is_err());
}

#[tokio::test]
async fn the_server_serves_the_committed_spec_without_credentials() {
    let h = Harness::start_with(|c| {
        c.http_credentials = Some(kairos::auth::Credentials::parse("admin:s3cret").unwrap());
    })
    .await;
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string("docs/openapi.json").expect("docs/openapi.json"))
            .unwrap();
    let (status, served) = h.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, committed);
    // The rest stays guarded, and the 401 is as the spec says (the harness checks it).
    let (status, _) = h.get("/v1/scheduler/jobs").await;
    assert_eq!(status, 401);
}

/// Each route of the table exists in the router: an unknown method gets its 405 with the
/// table's `Allow` (a path no route serves gets 404), and each listed method is taken.
#[tokio::test]
async fn every_route_in_the_table_is_served_with_its_methods() {
    let h = Harness::start().await;
    for route in routes() {
        let path = route
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { "probe" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let answer = h
            .client
            .request(reqwest::Method::PATCH, h.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status(), 405, "PATCH {path}");
        let allow = answer.headers().get("allow").cloned();
        let options = h
            .client
            .request(reqwest::Method::OPTIONS, h.url(&path))
            .send()
            .await
            .expect("request");
        assert_eq!(options.status(), 204, "OPTIONS {path}");
        assert_eq!(options.headers().get("allow"), allow.as_ref(), "OPTIONS {path}");
        assert_eq!(
            answer.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(route.methods),
            "Allow of {path}"
        );
        for method in route.methods.split(", ").filter(|m| *m != "OPTIONS") {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let answer = h
                .client
                .request(method.clone(), h.url(&path))
                .header("content-type", "application/json")
                .body(
                    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
                        "{}"
                    } else {
                        ""
                    },
                )
                .send()
                .await
                .expect("request");
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert!(!body.contains(NO_SUCH_ROUTE), "{method} {path}: {body}");
        }
    }
}
