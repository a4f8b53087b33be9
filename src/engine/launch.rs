//! What a worker is sent for a task: command, arguments, Chronos' environment, container and
//! fetch entries, built from the job and the task's record.

use std::time::Duration;

use super::Config;
use crate::executor::docker::Container;
use crate::executor::runner::TaskLaunch;
use crate::executor::{LaunchSpec, docker::VolumeSpec, fetch::FetchSpec};
use crate::job::Job;
use crate::store::TaskRecord;

/// Chronos formats resources with Java's `Double.toString` (`128.0`, `0.1`).
fn java_double(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e7 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Builds a task's launch: command, arguments, Chronos' environment, container and fetch entries.
pub(super) fn task_launch(job: &Job, task: &TaskRecord, config: &Config, hostname: &str) -> TaskLaunch {
    let extra = task.arguments.trim();
    let (command, arguments) = if job.shell {
        // Chronos appends the task's arguments to the shell command.
        let command = if extra.is_empty() {
            job.command.clone()
        } else {
            format!("{} {}", job.command, extra)
        };
        (command, Vec::new())
    } else {
        // Without a shell the arguments stay separate words; nothing is interpreted.
        let mut arguments = job.arguments.clone();
        if extra != job.arguments.join(" ") {
            arguments.extend(extra.split_whitespace().map(str::to_owned));
        }
        (job.command.clone(), arguments)
    };
    let mut env = chronos_env(job, task, hostname);
    if let Some(tokens) = &config.task_tokens {
        // Lets the task complete itself and report progress, and nothing else.
        env.push(("KAIROS_TASK_TOKEN".into(), tokens.token(&task.id)));
    }
    let sandbox = config.sandbox_dir.join(crate::executor::sandbox_name(&task.id));
    env.push(("MESOS_SANDBOX".into(), sandbox.display().to_string()));
    let process = LaunchSpec {
        task_id: task.id.clone(),
        command,
        shell: job.shell,
        arguments,
        env,
        sandbox,
        time_limit: (job.max_completion_time > 0).then(|| Duration::from_secs(job.max_completion_time)),
        output_limit: config.output_limit,
        user: Some(job.run_as_user.clone()),
    };
    let container = job.container.as_ref().map(|c| Container {
        image: c.image.clone(),
        network: c.network.clone(),
        volumes: c
            .volumes
            .iter()
            .map(|v| VolumeSpec {
                host_path: v.host_path.clone(),
                container_path: v.container_path.clone(),
                read_only: v.mode.as_deref() == Some("RO"),
            })
            .collect(),
        force_pull: c.force_pull_image,
        parameters: c
            .parameters
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        cpus: job.cpus,
        mem_mb: job.mem,
        disk_mb: job.disk,
    });
    // The deprecated `uris` become fetch entries with Chronos' defaults.
    let fetch = job
        .fetch
        .iter()
        .cloned()
        .chain(job.uris.iter().map(|uri| crate::job::Fetch::from_uri(uri)))
        .map(|f| FetchSpec {
            uri: f.uri,
            executable: f.executable,
            cache: f.cache,
            extract: f.extract,
            output_file: f.output_file,
        })
        .collect();
    TaskLaunch {
        process,
        container,
        fetch,
    }
}

/// Chronos' task environment, then the job's own variables (which cannot override Chronos').
fn chronos_env(job: &Job, task: &TaskRecord, hostname: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("mesos_task_id".into(), task.id.to_string()),
        ("MESOS_TASK_ID".into(), task.id.to_string()),
        ("CHRONOS_JOB_OWNER".into(), job.owner.clone()),
        ("CHRONOS_JOB_NAME".into(), job.name.clone()),
        ("HOST".into(), hostname.to_owned()),
        ("CHRONOS_RESOURCE_MEM".into(), java_double(job.mem)),
        ("CHRONOS_RESOURCE_CPU".into(), java_double(job.cpus)),
        ("CHRONOS_RESOURCE_DISK".into(), java_double(job.disk)),
        ("CHRONOS_JOB_RUN_TIME".into(), task.due_ms.to_string()),
        ("CHRONOS_JOB_RUN_ATTEMPT".into(), task.attempt.to_string()),
    ];
    let reserved: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
    for var in &job.environment_variables {
        // Chronos' own variables cannot be overridden by the job.
        if !reserved.contains(&var.name) {
            env.push((var.name.clone(), var.value.clone()));
        }
    }
    env
}
