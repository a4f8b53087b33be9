//! Fuzzes the job JSON decoder: `api::dto::parse_job` on both routes, the server policy check
//! (`check_policy`), and what the engine then checks before it stores the job: its epsilon and
//! its schedule parse. A job the API accepts must also survive its stored form (serialized and
//! read back), as the store does with it.
//!
//! Input: the request body, as a client would post it.
#![no_main]

use chrono::DateTime;
use kairos::api::dto::{self, Defaults, Route};
use kairos::executor::Policy;
use kairos::job::Job;
use kairos::schedule;
use libfuzzer_sys::fuzz_target;

/// 2026-01-01T00:00:00Z, the engine's `now` for the schedule parse.
const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let defaults = Defaults {
        cpus: 0.1,
        mem: 128.0,
        disk: 256.0,
        run_as_user: "root".to_owned(),
        epsilon: "PT60S".to_owned(),
        allow_privileged: false,
    };
    let policy = Policy {
        allowed_host_paths: vec!["/srv/data".into()],
        ..Policy::default()
    };
    for route in [Route::Iso8601, Route::Dependency] {
        let Ok((job, _provided)) = dto::parse_job(data, route, &defaults) else {
            continue;
        };
        if dto::check_policy(&job, &policy).is_err() {
            continue;
        }
        let now = DateTime::from_timestamp_millis(NOW_MS).expect("a valid instant");
        if !job.epsilon.is_empty() {
            let _ = schedule::parse_duration(&job.epsilon);
        }
        if let (None, Some(text)) = (&job.parents, &job.schedule) {
            if let Ok(parsed) = schedule::parse(text, job.schedule_time_zone.as_deref().unwrap_or(""), now) {
                let _ = parsed.upcoming(2);
            }
        }
        for constraint in &job.constraints {
            kairos::placement::Constraint::compile(&constraint.0, &constraint.1, &constraint.2)
                .expect("parse_job compiled every constraint");
        }
        let stored = serde_json::to_vec(&job).expect("a job serializes");
        let back: Job = serde_json::from_slice(&stored).unwrap_or_else(|e| {
            panic!(
                "the stored form of an accepted job does not read back: {e}\n{}",
                String::from_utf8_lossy(&stored)
            )
        });
        assert_eq!(back.name, job.name);
        let _ = job.for_clients();
    }
});
