//! Chronos' job JSON as clients send it, read leniently the way Chronos' deserializer does
//! (numbers in strings, `null` as absent, `dataJob` as an alias), with errors that name the field.

use serde_json::{Map, Value};

use super::ApiError;
use crate::engine::Provided;
use crate::job::{
    ConcurrencyPolicy, Constraint, Container, EnvVar, FailureKind, Fetch, Job, Parameter, RetryOn, Volume,
    is_valid_name,
};

/// Defaults for fields a client leaves out, from the server's flags.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub run_as_user: String,
    pub epsilon: String,
    /// Whether container parameters that escalate privilege are accepted.
    pub allow_privileged: bool,
}

/// Which route a job was posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Iso8601,
    Dependency,
}

type Obj = Map<String, Value>;

fn bad(field: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("field '{field}': {reason}"))
}

/// A field's value, with JSON `null` treated as absent.
fn field<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn string(obj: &Obj, key: &str) -> Result<Option<String>, ApiError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(bad(key, "must be a string")),
    }
}

fn boolean(obj: &Obj, key: &str) -> Result<Option<bool>, ApiError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(bad(key, "must be true or false")),
    }
}

fn number(obj: &Obj, key: &str) -> Result<Option<f64>, ApiError> {
    let value = match field(obj, key) {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match value {
        Some(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(bad(key, "must be a number")),
    }
}

fn count(obj: &Obj, key: &str) -> Result<Option<u64>, ApiError> {
    match number(obj, key)? {
        None => Ok(None),
        Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 => Ok(Some(v as u64)),
        Some(_) => Err(bad(key, "must be a whole number, zero or more")),
    }
}

fn array<'a>(obj: &'a Obj, key: &str) -> Result<&'a [Value], ApiError> {
    match field(obj, key) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(bad(key, "must be an array")),
    }
}

fn strings(obj: &Obj, key: &str) -> Result<Vec<String>, ApiError> {
    array(obj, key)?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(bad(key, "must be an array of strings")),
        })
        .collect()
}

fn objects<'a>(obj: &'a Obj, key: &str) -> Result<Vec<&'a Obj>, ApiError> {
    array(obj, key)?
        .iter()
        .map(|v| {
            v.as_object()
                .ok_or_else(|| bad(key, "must be an array of objects"))
        })
        .collect()
}

fn resource(obj: &Obj, key: &str, default: f64) -> Result<f64, ApiError> {
    match number(obj, key)? {
        None => Ok(default),
        Some(v) if v < 0.0 => Err(bad(key, "must not be negative")),
        // Chronos treats 0 as "use the default".
        Some(0.0) => Ok(default),
        Some(v) => Ok(v),
    }
}

/// Parses a posted job. Returns the job and which of the counters the client sent.
///
/// # Errors
/// A 400 naming the field for malformed JSON, wrong types, a bad name, both `schedule` and
/// `parents`, a job posted to the wrong route, or both `uris` and `fetch`.
pub fn parse_job(body: &[u8], route: Route, defaults: &Defaults) -> Result<(Job, Provided), ApiError> {
    if body.trim_ascii().is_empty() {
        return Err(ApiError::bad_request(
            "the request needs a body: the job as a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object describing a job",
        ));
    };
    let name = string(&obj, "name")?.ok_or_else(|| bad("name", "is required"))?;
    if !is_valid_name(&name) {
        return Err(bad(
            "name",
            format!("the job's name '{name}' is invalid. Allowed names: '([\\w\\.-]+)'"),
        ));
    }
    // Chronos keeps parents as a set: a repeated name counts once, in first-seen order.
    let parents = match field(&obj, "parents") {
        None => None,
        Some(_) => {
            let mut seen = std::collections::HashSet::new();
            let mut parents = strings(&obj, "parents")?;
            parents.retain(|p| seen.insert(p.clone()));
            Some(parents)
        }
    };
    let schedule = string(&obj, "schedule")?;
    match (route, &parents, &schedule) {
        (_, Some(_), Some(_)) => {
            return Err(bad("parents", "a job has either a schedule or parents, not both"));
        }
        (Route::Iso8601, Some(_), None) => {
            return Err(bad("parents", "jobs with parents go to /scheduler/dependency"));
        }
        (Route::Dependency, None, _) => {
            return Err(bad("parents", "is required for a dependent job"));
        }
        (Route::Dependency, Some(p), _) if p.is_empty() => {
            return Err(bad("parents", "must name at least one parent job"));
        }
        _ => {}
    }
    let mut uris = strings(&obj, "uris")?;
    let fetch = objects(&obj, "fetch")?
        .into_iter()
        .map(parse_fetch)
        .collect::<Result<Vec<_>, _>>()?;
    if !uris.is_empty() && !fetch.is_empty() {
        // `GET /jobs` fills each from the other, so a listed job comes back with both. When they
        // name the same URIs that is one list, kept as `fetch` (the current form, which carries
        // the options); `uris` then adds nothing.
        if !uris.iter().eq(fetch.iter().map(|f| &f.uri)) {
            return Err(bad(
                "fetch",
                "uris (deprecated) and fetch name different URIs; give one of them, or the same URIs in both",
            ));
        }
        uris.clear();
    }
    let environment_variables = objects(&obj, "environmentVariables")?
        .into_iter()
        .map(|v| {
            Ok(EnvVar {
                name: string(v, "name")?
                    .ok_or_else(|| bad("environmentVariables", "each entry needs a name"))?,
                value: string(v, "value")?
                    .ok_or_else(|| bad("environmentVariables", "each entry needs a value"))?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let constraints = array(&obj, "constraints")?
        .iter()
        .map(parse_constraint)
        .collect::<Result<Vec<_>, _>>()?;
    let container = match field(&obj, "container") {
        None => None,
        Some(Value::Object(c)) => parse_container(c, defaults.allow_privileged)?,
        Some(_) => return Err(bad("container", "must be an object")),
    };
    let retries = count(&obj, "retries")?.unwrap_or(2);
    let counters_given = Provided {
        success_count: field(&obj, "successCount").is_some(),
        error_count: field(&obj, "errorCount").is_some(),
        last_success: field(&obj, "lastSuccess").is_some(),
        last_error: field(&obj, "lastError").is_some(),
        errors_since_last_success: field(&obj, "errorsSinceLastSuccess").is_some(),
    };
    let is_dependent = parents.is_some();
    let mut job = Job {
        command: string(&obj, "command")?.unwrap_or_default(),
        shell: boolean(&obj, "shell")?.unwrap_or(true),
        epsilon: string(&obj, "epsilon")?.unwrap_or_else(|| defaults.epsilon.clone()),
        executor: string(&obj, "executor")?.unwrap_or_default(),
        executor_flags: string(&obj, "executorFlags")?.unwrap_or_default(),
        task_info_data: string(&obj, "taskInfoData")?.unwrap_or_default(),
        retries: u32::try_from(retries).map_err(|_| bad("retries", "is too large"))?,
        owner: string(&obj, "owner")?.unwrap_or_default(),
        owner_name: string(&obj, "ownerName")?.unwrap_or_default(),
        description: string(&obj, "description")?.unwrap_or_default(),
        is_async: boolean(&obj, "async")?.unwrap_or(false),
        success_count: count(&obj, "successCount")?.unwrap_or(0),
        error_count: count(&obj, "errorCount")?.unwrap_or(0),
        last_success: string(&obj, "lastSuccess")?.unwrap_or_default(),
        last_error: string(&obj, "lastError")?.unwrap_or_default(),
        cpus: resource(&obj, "cpus", defaults.cpus)?,
        disk: resource(&obj, "disk", defaults.disk)?,
        mem: resource(&obj, "mem", defaults.mem)?,
        disabled: boolean(&obj, "disabled")?.unwrap_or(false),
        soft_error: boolean(&obj, "softError")?.unwrap_or(false),
        data_processing_job_type: match boolean(&obj, "dataProcessingJobType")? {
            Some(b) => b,
            None => boolean(&obj, "dataJob")?.unwrap_or(false),
        },
        errors_since_last_success: count(&obj, "errorsSinceLastSuccess")?.unwrap_or(0),
        fetch,
        uris,
        environment_variables,
        arguments: strings(&obj, "arguments")?,
        high_priority: boolean(&obj, "highPriority")?.unwrap_or(false),
        run_as_user: string(&obj, "runAsUser")?.unwrap_or_else(|| defaults.run_as_user.clone()),
        concurrent: boolean(&obj, "concurrent")?.unwrap_or(false),
        max_completion_time: count(&obj, "maxCompletionTime")?.unwrap_or(0),
        container,
        constraints,
        schedule_time_zone: if is_dependent {
            None
        } else {
            Some(string(&obj, "scheduleTimeZone")?.unwrap_or_default())
        },
        schedule: if is_dependent {
            None
        } else {
            // No schedule and no parents: Chronos runs the job once, now.
            Some(schedule.unwrap_or_else(|| "R1//PT24H".to_owned()))
        },
        // Never read from clients: a job they send starts its cron schedule again from now.
        schedule_cursor: None,
        parents,
        name,
        retry_delay: duration(&obj, "retryDelay")?,
        retry_backoff: match number(&obj, "retryBackoff")? {
            None => 1.0,
            Some(v) if (1.0..=MAX_BACKOFF).contains(&v) => v,
            Some(_) => {
                return Err(bad(
                    "retryBackoff",
                    format!("must be a multiplier from 1 to {MAX_BACKOFF}"),
                ));
            }
        },
        retry_delay_max: duration(&obj, "retryDelayMax")?,
        retry_on: retry_on(&obj)?,
        concurrency_policy: None,
        catch_up: boolean(&obj, "catchUp")?.unwrap_or(false),
        catch_up_limit: match count(&obj, "catchUpLimit")? {
            None => None,
            Some(n @ 1..=MAX_CATCH_UP) => Some(n as u32),
            Some(_) => {
                return Err(bad("catchUpLimit", format!("must be from 1 to {MAX_CATCH_UP}")));
            }
        },
        warn_after: warn_after(&obj)?,
        notify_on: notify_on(&obj)?,
        notifications: notifications(&obj)?,
    };
    if let Some(text) = string(&obj, "concurrencyPolicy")? {
        let policy = ConcurrencyPolicy::parse(&text).ok_or_else(|| {
            bad(
                "concurrencyPolicy",
                format!("'{text}' is not one of queue, allow, forbid, replace"),
            )
        })?;
        // The policy decides; `concurrent` follows it, so the two never disagree.
        job.concurrent = policy == ConcurrencyPolicy::Allow;
        job.concurrency_policy = Some(policy);
    }
    Ok((job, counters_given))
}

/// The largest `retryBackoff`: beyond it the second retry would already wait for years.
const MAX_BACKOFF: f64 = 1000.0;

/// The most missed runs `catchUpLimit` may ask to run at once.
const MAX_CATCH_UP: u64 = 1000;

/// The most `retryOn` entries: every kind plus a generous list of exit statuses.
const MAX_RETRY_ON: usize = 64;

/// An optional ISO 8601 duration field (exact units only), kept as written; empty when absent.
fn duration(obj: &Obj, key: &str) -> Result<String, ApiError> {
    let Some(text) = string(obj, key)?.filter(|t| !t.is_empty()) else {
        return Ok(String::new());
    };
    crate::schedule::parse_duration(&text).map_err(|e| bad(key, e))?;
    Ok(text)
}

/// `retryOn`: kinds of failure by name, and exit statuses as numbers.
fn retry_on(obj: &Obj) -> Result<Vec<RetryOn>, ApiError> {
    let entries = array(obj, "retryOn")?;
    if entries.len() > MAX_RETRY_ON {
        return Err(bad("retryOn", format!("has more than {MAX_RETRY_ON} entries")));
    }
    entries
        .iter()
        .map(|entry| match entry {
            Value::String(text) => FailureKind::parse(text).map(RetryOn::Kind).ok_or_else(|| {
                bad(
                    "retryOn",
                    format!(
                        "'{text}' is not a kind of failure (exit, timeout, lost, fetch, launch) \
                         or an exit status"
                    ),
                )
            }),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(RetryOn::ExitCode)
                .ok_or_else(|| bad("retryOn", format!("{n} is not an exit status"))),
            _ => Err(bad(
                "retryOn",
                "each entry is a kind of failure (a string) or an exit status (a number)",
            )),
        })
        .collect()
}

fn parse_fetch(obj: &Obj) -> Result<Fetch, ApiError> {
    Ok(Fetch {
        uri: string(obj, "uri")?.ok_or_else(|| bad("fetch", "each entry needs a uri"))?,
        executable: boolean(obj, "executable")?.unwrap_or(false),
        cache: boolean(obj, "cache")?.unwrap_or(false),
        extract: boolean(obj, "extract")?.unwrap_or(true),
        // Chronos' name is `output_file`; kairos once wrote `outputFile`, so that is read too.
        output_file: match string(obj, "output_file")? {
            Some(file) => file,
            None => string(obj, "outputFile")?.unwrap_or_default(),
        },
    })
}

fn parse_constraint(value: &Value) -> Result<Constraint, ApiError> {
    let parts: Vec<&str> = match value {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let [attribute, operator, argument] = parts.as_slice() else {
        return Err(bad(
            "constraints",
            "each constraint is [attribute, operator, value]",
        ));
    };
    crate::placement::Constraint::compile(attribute, operator, argument)
        .map_err(|e| bad("constraints", e))?;
    Ok(Constraint(
        (*attribute).to_owned(),
        (*operator).to_owned(),
        (*argument).to_owned(),
    ))
}

fn parse_container(obj: &Obj, allow_privileged: bool) -> Result<Option<Container>, ApiError> {
    // Chronos ignores a container without an image.
    let Some(image) = string(obj, "image")? else {
        return Ok(None);
    };
    let kind = string(obj, "type")?
        .unwrap_or_else(|| "DOCKER".to_owned())
        .to_uppercase();
    if !matches!(kind.as_str(), "DOCKER" | "MESOS") {
        return Err(bad("container.type", format!("'{kind}' is not DOCKER or MESOS")));
    }
    let network = string(obj, "network")?.unwrap_or_else(|| "HOST".to_owned());
    if !matches!(network.as_str(), "BRIDGE" | "HOST" | "USER" | "NONE") {
        return Err(bad(
            "container.network",
            format!("'{network}' is not BRIDGE, HOST, USER or NONE"),
        ));
    }
    let volumes = objects(obj, "volumes")?
        .into_iter()
        .map(|v| {
            let mode = string(v, "mode")?.map(|m| m.to_uppercase());
            if let Some(m) = &mode
                && m != "RO"
                && m != "RW"
            {
                return Err(bad("container.volumes", format!("mode '{m}' is not RO or RW")));
            }
            Ok(Volume {
                host_path: string(v, "hostPath")?,
                container_path: string(v, "containerPath")?
                    .ok_or_else(|| bad("container.volumes", "each volume needs a containerPath"))?,
                mode,
                external: field(v, "external").cloned(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let parameters = objects(obj, "parameters")?
        .into_iter()
        .map(|p| {
            Ok(Parameter {
                key: string(p, "key")?
                    .ok_or_else(|| bad("container.parameters", "each parameter needs a key"))?,
                value: string(p, "value")?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let pairs: Vec<(String, String)> = parameters
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    crate::executor::docker::check_parameters(&pairs, allow_privileged)
        .map_err(|reason| bad("container.parameters", reason))?;
    let specs: Vec<crate::executor::docker::VolumeSpec> = volumes
        .iter()
        .map(|v| crate::executor::docker::VolumeSpec {
            host_path: v.host_path.clone(),
            container_path: v.container_path.clone(),
            read_only: v.mode.as_deref() == Some("RO"),
        })
        .collect();
    crate::executor::docker::check_volumes(&specs, allow_privileged)
        .map_err(|reason| bad("container.volumes", reason))?;
    Ok(Some(Container {
        kind,
        image,
        network,
        network_name: string(obj, "networkName")?,
        network_infos: array(obj, "networkInfos")?
            .iter()
            .map(port_numbers_as_strings)
            .collect(),
        volumes,
        // Chronos reads the value as text and takes only "true" as true; anything else is false.
        force_pull_image: field(obj, "forcePullImage").is_some_and(|v| match v {
            Value::Bool(b) => *b,
            Value::String(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }),
        parameters,
    }))
}

/// Refuses a job whose container mounts a host path outside the allowed prefixes, or whose
/// fetch entries use a scheme not allowed (`parse_job` has already refused privileged
/// parameters and the Docker socket). Each worker checks again before it launches.
///
/// # Errors
/// A 400 naming the field at fault.
pub fn check_policy(job: &Job, policy: &crate::executor::Policy) -> Result<(), ApiError> {
    if let Some(container) = &job.container {
        let volumes: Vec<crate::executor::docker::VolumeSpec> = container
            .volumes
            .iter()
            .map(|v| crate::executor::docker::VolumeSpec {
                host_path: v.host_path.clone(),
                container_path: v.container_path.clone(),
                read_only: v.mode.as_deref() == Some("RO"),
            })
            .collect();
        let parameters: Vec<(String, String)> = container
            .parameters
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        crate::executor::docker::check_host_paths(&volumes, &parameters, policy)
            .map_err(|refusal| bad(refusal.field, refusal.reason))?;
    }
    let entries = job
        .fetch
        .iter()
        .map(|f| ("fetch", f.uri.as_str()))
        .chain(job.uris.iter().map(|uri| ("uris", uri.as_str())));
    for (field, uri) in entries {
        crate::executor::fetch::check_scheme(uri, &policy.fetch_schemes).map_err(|e| bad(field, e))?;
    }
    Ok(())
}

/// Webhooks a job may name, and the longest URL accepted.
const MAX_NOTIFICATIONS: usize = 10;
const MAX_WEBHOOK_URL: usize = 2048;

/// `warnAfter`: a positive ISO 8601 duration, kept as sent; absent or empty is none.
fn warn_after(obj: &Obj) -> Result<String, ApiError> {
    let text = string(obj, "warnAfter")?.unwrap_or_default();
    if !text.is_empty() {
        let duration = crate::schedule::parse_duration(&text).map_err(|e| bad("warnAfter", e))?;
        if duration <= chrono::Duration::zero() {
            return Err(bad("warnAfter", "must be longer than zero"));
        }
    }
    Ok(text)
}

/// A list of event names (`failure`, `recovery`, `skipped`, `late`, `success`), each once.
fn kinds(value: &Value, field: &str) -> Result<Vec<crate::notify::Kind>, ApiError> {
    let Value::Array(items) = value else {
        return Err(bad(field, "must be an array of event names"));
    };
    let mut kinds = Vec::new();
    for item in items {
        let kind = item
            .as_str()
            .and_then(crate::notify::Kind::parse)
            .ok_or_else(|| {
                let names: Vec<&str> = crate::notify::Kind::ALL.iter().map(|k| k.as_str()).collect();
                bad(field, format!("{item} is not an event ({})", names.join(", ")))
            })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// `notifyOn`: which events reach the owners by email and the server's webhook; absent is the
/// default set, `[]` none.
fn notify_on(obj: &Obj) -> Result<Option<Vec<crate::notify::Kind>>, ApiError> {
    field(obj, "notifyOn").map(|v| kinds(v, "notifyOn")).transpose()
}

/// `notifications`: at most [`MAX_NOTIFICATIONS`] webhooks, each `{"webhook": URL, "on": [...],
/// "format": "json" | "slack"}` with an http or https URL; `on` defaults to the default set.
fn notifications(obj: &Obj) -> Result<Vec<crate::notify::Notification>, ApiError> {
    const FIELD: &str = "notifications";
    let entries = objects(obj, FIELD)?;
    if entries.len() > MAX_NOTIFICATIONS {
        return Err(bad(
            FIELD,
            format!("at most {MAX_NOTIFICATIONS} webhooks per job"),
        ));
    }
    entries
        .into_iter()
        .map(|entry| {
            if let Some(key) = entry
                .keys()
                .find(|k| !["on", "webhook", "format"].contains(&k.as_str()))
            {
                return Err(bad(FIELD, format!("unknown key '{key}' (on, webhook, format)")));
            }
            let url =
                string(entry, "webhook")?.ok_or_else(|| bad(FIELD, "each entry needs a webhook URL"))?;
            if url.len() > MAX_WEBHOOK_URL {
                return Err(bad(
                    FIELD,
                    format!("a webhook URL is longer than {MAX_WEBHOOK_URL} bytes"),
                ));
            }
            crate::notify::check_url(&url).map_err(|why| bad(FIELD, why))?;
            let on = match field(entry, "on") {
                None => crate::notify::Kind::DEFAULT.to_vec(),
                Some(value) => kinds(value, FIELD)?,
            };
            if on.is_empty() {
                return Err(bad(FIELD, "'on' must name at least one event"));
            }
            let format = match string(entry, "format")?.as_deref() {
                None | Some("json") => crate::notify::Format::Json,
                Some("slack") => crate::notify::Format::Slack,
                Some(other) => return Err(bad(FIELD, format!("format '{other}' is not json or slack"))),
            };
            Ok(crate::notify::Notification {
                on,
                webhook: url,
                format,
            })
        })
        .collect()
}

/// Chronos writes `portMappings`' `hostPort` and `containerPort` as strings (and reads numbers or
/// strings); a network entry is otherwise kept as sent.
fn port_numbers_as_strings(network: &Value) -> Value {
    let mut network = network.clone();
    let mappings = network
        .get_mut("portMappings")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for mapping in mappings.filter_map(Value::as_object_mut) {
        for key in ["hostPort", "containerPort"] {
            if let Some(port) = mapping.get_mut(key)
                && let Value::Number(n) = port
            {
                *port = Value::String(n.to_string());
            }
        }
    }
    network
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            cpus: 0.1,
            mem: 128.0,
            disk: 256.0,
            run_as_user: "root".to_owned(),
            epsilon: "PT60S".to_owned(),
            allow_privileged: false,
        }
    }

    fn parse(body: &str, route: Route) -> Result<Job, String> {
        parse_job(body.as_bytes(), route, &defaults())
            .map(|(j, _)| j)
            .map_err(|e| e.message)
    }

    #[test]
    fn defaults_follow_chronos() {
        let job = parse(
            r#"{"name":"a","command":"true","schedule":"R//PT1H"}"#,
            Route::Iso8601,
        )
        .unwrap();
        assert_eq!(
            (job.retries, job.shell, job.cpus, job.mem, job.disk),
            (2, true, 0.1, 128.0, 256.0)
        );
        assert_eq!(job.run_as_user, "root");
        assert_eq!(job.schedule_time_zone.as_deref(), Some(""));
        assert!(job.parents.is_none());
    }

    #[test]
    fn lenient_types_are_accepted() {
        let job = parse(
            r#"{"name":"a","cpus":"0.5","mem":"0","retries":"3","dataJob":true,"schedule":null,"container":{"type":"docker","image":"busybox","forcePullImage":"true"}}"#,
            Route::Iso8601,
        )
        .unwrap();
        assert_eq!((job.cpus, job.mem, job.retries), (0.5, 128.0, 3));
        assert!(job.data_processing_job_type);
        assert_eq!(job.schedule.as_deref(), Some("R1//PT24H"));
        let container = job.container.unwrap();
        assert_eq!(
            (
                container.kind.as_str(),
                container.network.as_str(),
                container.force_pull_image
            ),
            ("DOCKER", "HOST", true)
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            ("{", Route::Iso8601, "not valid JSON"),
            ("[]", Route::Iso8601, "JSON object"),
            (r#"{"command":"x"}"#, Route::Iso8601, "'name'"),
            (r#"{"name":"a b"}"#, Route::Iso8601, "'name'"),
            (r#"{"name":"a","retries":-1}"#, Route::Iso8601, "'retries'"),
            (r#"{"name":"a","cpus":"lots"}"#, Route::Iso8601, "'cpus'"),
            (r#"{"name":"a","shell":"maybe"}"#, Route::Iso8601, "'shell'"),
            (
                r#"{"name":"a","schedule":"R//PT1S","parents":["b"]}"#,
                Route::Dependency,
                "'parents'",
            ),
            (r#"{"name":"a","parents":["b"]}"#, Route::Iso8601, "'parents'"),
            (r#"{"name":"a"}"#, Route::Dependency, "'parents'"),
            (r#"{"name":"a","parents":[]}"#, Route::Dependency, "'parents'"),
            (
                r#"{"name":"a","uris":["x"],"fetch":[{"uri":"y"}]}"#,
                Route::Iso8601,
                "'fetch'",
            ),
            (r#"{"name":"."}"#, Route::Iso8601, "'name'"),
            (r#"{"name":".."}"#, Route::Iso8601, "'name'"),
            (
                r#"{"name":"a","constraints":[["rack","NEAR","x"]]}"#,
                Route::Iso8601,
                "'constraints'",
            ),
            (
                r#"{"name":"a","container":{"image":"x","network":"WEIRD"}}"#,
                Route::Iso8601,
                "'container.network'",
            ),
            (
                r#"{"name":"a","environmentVariables":[{"name":"X"}]}"#,
                Route::Iso8601,
                "'environmentVariables'",
            ),
        ];
        for (body, route, needle) in cases {
            let err = parse(body, route).expect_err(body);
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn counters_given_is_reported() {
        let (_, given) = parse_job(br#"{"name":"a","successCount":4}"#, Route::Iso8601, &defaults()).unwrap();
        assert_eq!(
            given,
            Provided {
                success_count: true,
                ..Provided::default()
            }
        );
        let (_, given) = parse_job(br#"{"name":"a"}"#, Route::Iso8601, &defaults()).unwrap();
        assert_eq!(given, Provided::default());
    }

    #[test]
    fn listed_shapes_are_read_back_as_chronos_writes_them() {
        // Both lists, as `GET /jobs` shows them, are one list, kept as fetch.
        let job = parse(
            r#"{"name":"a","uris":["http://x/a.tgz"],"fetch":[{"uri":"http://x/a.tgz","extract":true,"output_file":"b.tgz"}]}"#,
            Route::Iso8601,
        )
        .unwrap();
        assert!(job.uris.is_empty());
        assert_eq!(job.fetch[0].output_file, "b.tgz");
        let fetch = serde_json::to_value(&job.fetch).unwrap();
        assert_eq!(
            fetch,
            serde_json::json!([{"uri": "http://x/a.tgz", "executable": false, "cache": false, "extract": true, "output_file": "b.tgz"}])
        );
        // kairos' old spelling still reads.
        let job = parse(
            r#"{"name":"a","fetch":[{"uri":"u","outputFile":"o"}]}"#,
            Route::Iso8601,
        )
        .unwrap();
        assert_eq!(job.fetch[0].output_file, "o");
        // Parents are a set, in first-seen order.
        let job = parse(
            r#"{"name":"a","parents":["c1","c1","p1","c1"]}"#,
            Route::Dependency,
        )
        .unwrap();
        assert_eq!(job.parents.unwrap(), ["c1", "p1"]);
        // forcePullImage is true only for true or "true"; ports are written as strings.
        let job = parse(
            r#"{"name":"a","container":{"image":"i","forcePullImage":"yes","networkInfos":[{"name":"n","portMappings":[{"hostPort":80,"containerPort":"8080","protocol":"tcp"}]}]}}"#,
            Route::Iso8601,
        )
        .unwrap();
        let container = job.container.unwrap();
        assert!(!container.force_pull_image);
        assert_eq!(
            container.network_infos[0]["portMappings"][0],
            serde_json::json!({"hostPort": "80", "containerPort": "8080", "protocol": "tcp"})
        );
    }

    #[test]
    fn the_policy_refuses_host_paths_and_schemes_naming_the_field() {
        let policy = crate::executor::Policy {
            allowed_host_paths: vec!["/srv/data".into()],
            fetch_schemes: vec!["https".to_owned()],
            ..crate::executor::Policy::default()
        };
        let check = |body: &str| {
            let job = parse(body, Route::Iso8601).unwrap();
            check_policy(&job, &policy).map_err(|e| e.message)
        };
        assert_eq!(
            check(
                r#"{"name":"a","container":{"image":"i","volumes":[{"hostPath":"/srv/data/x","containerPath":"/x"}]},"fetch":[{"uri":"https://h/f"}]}"#
            ),
            Ok(())
        );
        let refused = check(
            r#"{"name":"a","container":{"image":"i","volumes":[{"hostPath":"/etc","containerPath":"/x"}]}}"#,
        )
        .unwrap_err();
        assert!(
            refused.starts_with("field 'container.volumes': host path '/etc' is refused"),
            "{refused}"
        );
        let refused = check(
            r#"{"name":"a","container":{"image":"i","parameters":[{"key":"volume","value":"/etc:/x"}]}}"#,
        )
        .unwrap_err();
        assert!(refused.starts_with("field 'container.parameters': "), "{refused}");
        let refused = check(r#"{"name":"a","fetch":[{"uri":"file:///etc/shadow"}]}"#).unwrap_err();
        assert!(refused.starts_with("field 'fetch': "), "{refused}");
        assert!(refused.contains("the scheme 'file' is not allowed"), "{refused}");
        let refused = check(r#"{"name":"a","uris":["http://h/f"]}"#).unwrap_err();
        assert!(refused.starts_with("field 'uris': "), "{refused}");
    }

    #[test]
    fn notification_fields_are_read_and_checked_by_name() {
        let job = parse(
            r#"{"name":"a","warnAfter":"PT90S","notifyOn":["failure","success","failure"],
                "notifications":[{"webhook":"https://hooks.example/x","on":["late"],"format":"slack"},
                                 {"webhook":"http://127.0.0.1:9/h"}]}"#,
            Route::Iso8601,
        )
        .unwrap();
        use crate::notify::{Format, Kind};
        assert_eq!(job.warn_after, "PT90S");
        assert_eq!(job.notify_on, Some(vec![Kind::Failure, Kind::Success]));
        assert_eq!(job.notifications[0].on, [Kind::Late]);
        assert_eq!(job.notifications[0].format, Format::Slack);
        assert_eq!(job.notifications[1].on, Kind::DEFAULT, "the default set");
        // Stored and listed with camelCase names, and only when given.
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["notifications"][0]["format"], "slack");
        assert!(json["notifications"][1].get("format").is_none());
        let plain = serde_json::to_value(parse(r#"{"name":"a"}"#, Route::Iso8601).unwrap()).unwrap();
        for key in ["warnAfter", "notifyOn", "notifications"] {
            assert!(plain.get(key).is_none(), "{key} is not written for a Chronos job");
        }
        let many = format!(
            r#"{{"name":"a","notifications":[{}]}}"#,
            [r#"{"webhook":"http://h/"}"#; 11].join(",")
        );
        let long = format!(
            r#"{{"name":"a","notifications":[{{"webhook":"http://h/{}"}}]}}"#,
            "x".repeat(2100)
        );
        let cases = [
            (r#"{"name":"a","warnAfter":"soon"}"#.to_owned(), "'warnAfter'"),
            (r#"{"name":"a","warnAfter":"PT0S"}"#.to_owned(), "'warnAfter'"),
            (r#"{"name":"a","notifyOn":["fire"]}"#.to_owned(), "'notifyOn'"),
            (r#"{"name":"a","notifyOn":"failure"}"#.to_owned(), "'notifyOn'"),
            (r#"{"name":"a","notifications":{}}"#.to_owned(), "'notifications'"),
            (
                r#"{"name":"a","notifications":[{"on":["failure"]}]}"#.to_owned(),
                "webhook URL",
            ),
            (
                r#"{"name":"a","notifications":[{"webhook":"ftp://h/x"}]}"#.to_owned(),
                "http or https",
            ),
            (
                r#"{"name":"a","notifications":[{"webhook":"not a url"}]}"#.to_owned(),
                "not a URL",
            ),
            (
                r#"{"name":"a","notifications":[{"webhook":"http://h/","on":[]}]}"#.to_owned(),
                "at least one",
            ),
            (
                r#"{"name":"a","notifications":[{"webhook":"http://h/","format":"xml"}]}"#.to_owned(),
                "format",
            ),
            (
                r#"{"name":"a","notifications":[{"webhook":"http://h/","url":"x"}]}"#.to_owned(),
                "unknown key 'url'",
            ),
            (many, "at most 10"),
            (long, "longer than 2048"),
        ];
        for (body, needle) in cases {
            let err = parse(&body, Route::Iso8601).expect_err(&body);
            assert!(err.contains(needle), "{body}: {err}");
            assert!(err.contains("field '"), "names the field: {err}");
        }
    }
}
