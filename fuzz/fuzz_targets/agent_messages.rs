//! Fuzzes the agent protocol's edge: arbitrary bytes decoded as each message an agent sends
//! (`AgentMessage`, and `Register`, `TaskStatus` and `Output` on their own) and as the scheduler's
//! `SchedulerMessage`, each then converted to the typed value the engine or the agent acts on
//! (`worker_from_register`, `end_from_proto`, `output_from_proto`, `launch_from_proto`).
//! Converted values travel back to the wire and convert to the same value again, and a launch's
//! sandbox stays one directory under the agent's.
//!
//! Input: one byte choosing the message type, then the encoded message.
#![no_main]

use std::path::Path;

use kairos::agent::proto::{self, agent_message, scheduler_message};
use kairos::agent::{self, service};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Ok(message) = proto::AgentMessage::decode(bytes) {
                agent_message(message);
            }
        }
        1 => {
            if let Ok(register) = proto::Register::decode(bytes) {
                let _ = service::worker_from_register(register);
            }
        }
        2 => {
            if let Ok(status) = proto::TaskStatus::decode(bytes) {
                status_round_trip(status);
            }
        }
        3 => {
            if let Ok(output) = proto::Output::decode(bytes) {
                output_round_trip(output);
            }
        }
        _ => {
            if let Ok(proto::SchedulerMessage {
                kind: Some(scheduler_message::Kind::Launch(launch)),
            }) = proto::SchedulerMessage::decode(bytes)
            {
                launch_round_trip(launch);
            }
        }
    }
});

/// What the scheduler's service does with each message on an agent's stream.
fn agent_message(message: proto::AgentMessage) {
    match message.kind {
        Some(agent_message::Kind::Register(register)) => {
            if let Ok(worker) = service::worker_from_register(register) {
                assert!(!worker.name.trim().is_empty());
                for end in &worker.finished {
                    assert_eq!(end.task_id, end.outcome.task_id);
                }
            }
        }
        Some(agent_message::Kind::Status(status)) => status_round_trip(status),
        Some(agent_message::Kind::Output(output)) => output_round_trip(output),
        Some(agent_message::Kind::Heartbeat(_)) | None => {}
    }
}

fn status_round_trip(status: proto::TaskStatus) {
    if let Some(end) = agent::end_from_proto(status) {
        let _ = end.describe();
        assert_eq!(agent::end_from_proto(agent::end_to_proto(&end)), Some(end));
    }
}

fn output_round_trip(output: proto::Output) {
    if let Some((task_id, stream, data)) = agent::output_from_proto(output) {
        let Some(agent_message::Kind::Output(again)) = agent::output_to_proto(&task_id, stream, &data).kind
        else {
            panic!("an output message");
        };
        assert_eq!(agent::output_from_proto(again), Some((task_id, stream, data)));
    }
}

fn launch_round_trip(launch: proto::Launch) {
    let sandbox_dir = Path::new("/agent");
    let Some(typed) = agent::launch_from_proto(launch, sandbox_dir) else {
        return;
    };
    assert_eq!(
        typed.process.sandbox.parent(),
        Some(sandbox_dir),
        "{:?}",
        typed.process.sandbox
    );
    let again =
        agent::launch_from_proto(agent::launch_to_proto(&typed), sandbox_dir).expect("a launch we made");
    // Compared as text: the resources are floats off the wire, and NaN equals nothing.
    assert_eq!(format!("{:?}", again.container), format!("{:?}", typed.container));
    assert_eq!(again.fetch, typed.fetch);
    assert_eq!(again.process.task_id, typed.process.task_id);
    assert_eq!(again.process.env, typed.process.env);
    assert_eq!(again.process.time_limit, typed.process.time_limit);
    assert_eq!(again.process.user, typed.process.user);
}
