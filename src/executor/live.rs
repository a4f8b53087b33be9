//! The output of running tasks, as it is written: workers feed it chunk by chunk, readers follow
//! it. The engine opens a task's tail when it hands the task to a worker and closes it when the
//! task ends; workers only feed tails that are open, so a late chunk cannot bring one back.
//!
//! A tail keeps the same first bytes that the task's record keeps at its end (the workers feed
//! only what they keep), so what a reader followed is a prefix of the final record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::job::TaskId;

/// Which of a task's outputs a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where a worker sends the chunks of its tasks' output.
pub type Feed = Arc<dyn Fn(&TaskId, Stream, &[u8]) + Send + Sync>;

/// One task's feed: what the process and container executors push their chunks into.
#[derive(Clone)]
pub struct TaskFeed {
    pub task_id: TaskId,
    pub feed: Feed,
}

impl std::fmt::Debug for TaskFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFeed")
            .field("task_id", &self.task_id)
            .finish_non_exhaustive()
    }
}

impl TaskFeed {
    pub fn push(&self, stream: Stream, bytes: &[u8]) {
        if !bytes.is_empty() {
            (self.feed)(&self.task_id, stream, bytes);
        }
    }
}

/// The tails of the tasks that run now, by task id. Cheap to clone.
#[derive(Clone, Default)]
pub struct Live {
    tails: Arc<Mutex<HashMap<TaskId, Arc<Tail>>>>,
}

/// What one task has written so far.
struct Tail {
    buffers: Mutex<Buffers>,
    /// Bumped on every change, so followers wake.
    changed: watch::Sender<u64>,
}

struct Buffers {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    limit: usize,
    closed: bool,
}

impl Live {
    fn tails(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Arc<Tail>>> {
        self.tails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A task goes to its worker: from now on its chunks are kept, at most `limit` bytes of each
    /// output. Opening again (a relaunch under the same id) starts afresh.
    pub fn open(&self, task_id: &TaskId, limit: usize) {
        let tail = Arc::new(Tail {
            buffers: Mutex::new(Buffers {
                stdout: Vec::new(),
                stderr: Vec::new(),
                limit,
                closed: false,
            }),
            changed: watch::Sender::new(0),
        });
        if let Some(old) = self.tails().insert(task_id.clone(), tail) {
            old.close();
        }
    }

    /// A chunk of a task's output; dropped unless the task's tail is open.
    pub fn push(&self, task_id: &TaskId, stream: Stream, bytes: &[u8]) {
        let tail = self.tails().get(task_id).cloned();
        if let Some(tail) = tail {
            tail.push(stream, bytes);
        }
    }

    /// The task ended: its followers read what is left and stop.
    pub fn close(&self, task_id: &TaskId) {
        let tail = self.tails().remove(task_id);
        if let Some(tail) = tail {
            tail.close();
        }
    }

    /// Closes every tail for which `keep` is false; a safety net for tasks that left without an
    /// end passing by (it costs one pass over the running tasks).
    pub fn retain(&self, mut keep: impl FnMut(&TaskId) -> bool) {
        self.tails().retain(|id, tail| {
            let kept = keep(id);
            if !kept {
                tail.close();
            }
            kept
        });
    }

    /// Follows a task's output from its start, if its tail is open.
    pub fn follow(&self, task_id: &TaskId) -> Option<Follower> {
        let tail = self.tails().get(task_id).cloned()?;
        let changed = tail.changed.subscribe();
        Some(Follower {
            tail,
            changed,
            read: [0, 0],
        })
    }

    /// How many tails are open.
    pub fn len(&self) -> usize {
        self.tails().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A feed into these tails, for a worker in this process.
    pub fn feed(&self) -> Feed {
        let live = self.clone();
        Arc::new(move |task_id, stream, bytes| live.push(task_id, stream, bytes))
    }
}

impl Tail {
    fn buffers(&self) -> std::sync::MutexGuard<'_, Buffers> {
        self.buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, stream: Stream, bytes: &[u8]) {
        {
            let mut buffers = self.buffers();
            if buffers.closed {
                return;
            }
            let limit = buffers.limit;
            let buffer = match stream {
                Stream::Stdout => &mut buffers.stdout,
                Stream::Stderr => &mut buffers.stderr,
            };
            let room = limit.saturating_sub(buffer.len());
            if room == 0 {
                return;
            }
            buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn close(&self) {
        self.buffers().closed = true;
        self.changed.send_modify(|n| *n += 1);
    }
}

/// A reader of one task's output.
pub struct Follower {
    tail: Arc<Tail>,
    changed: watch::Receiver<u64>,
    /// Bytes of stdout and of stderr handed out so far.
    read: [usize; 2],
}

/// What a follower got since it last asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunks {
    pub stdout: String,
    pub stderr: String,
    /// The task has ended; nothing more comes through this follower.
    pub closed: bool,
}

impl Follower {
    /// What was written since the last call, without waiting. Text ends on a whole character:
    /// a character split across chunks waits for its last byte.
    pub fn take(&mut self) -> Chunks {
        self.changed.mark_unchanged();
        let buffers = self.tail.buffers();
        let [out, err] = &mut self.read;
        Chunks {
            stdout: whole_text(&buffers.stdout, out),
            stderr: whole_text(&buffers.stderr, err),
            closed: buffers.closed,
        }
    }

    /// Waits until there is something new (or the tail closed) since the last [`take`](Self::take).
    pub async fn changed(&mut self) {
        // An error means the tail is gone, which only happens after it closed.
        let _ = self.changed.changed().await;
    }

    /// Bytes of stdout and of stderr taken so far.
    pub fn taken(&self) -> [usize; 2] {
        self.read
    }
}

/// The text of `bytes` from `*from`, up to the last whole character; moves `*from` past it.
/// Bytes that are not UTF-8 at all are replaced, as the final record does.
fn whole_text(bytes: &[u8], from: &mut usize) -> String {
    let rest = &bytes[(*from).min(bytes.len())..];
    let end = match std::str::from_utf8(rest) {
        Ok(_) => rest.len(),
        // An incomplete character at the end waits; an invalid one is passed on, replaced.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => rest.len(),
    };
    *from += end;
    String::from_utf8_lossy(&rest[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> TaskId {
        TaskId::new(n, 0, "job", "")
    }

    #[tokio::test]
    async fn followers_read_chunks_in_order_then_the_close() {
        let live = Live::default();
        let task = id(1);
        assert!(
            live.follow(&task).is_none(),
            "nothing to follow before the launch"
        );
        live.open(&task, 1024);
        let mut follower = live.follow(&task).expect("open");
        live.push(&task, Stream::Stdout, b"one\n");
        live.push(&task, Stream::Stderr, b"warn\n");
        follower.changed().await;
        let got = follower.take();
        assert_eq!(
            (got.stdout.as_str(), got.stderr.as_str(), got.closed),
            ("one\n", "warn\n", false)
        );
        live.push(&task, Stream::Stdout, b"two\n");
        follower.changed().await;
        assert_eq!(follower.take().stdout, "two\n");
        live.close(&task);
        follower.changed().await;
        let last = follower.take();
        assert!(last.closed && last.stdout.is_empty());
        assert_eq!(follower.taken(), [8, 5]);
        assert!(live.is_empty());
    }

    #[test]
    fn chunks_for_closed_or_unknown_tasks_are_dropped() {
        let live = Live::default();
        live.push(&id(2), Stream::Stdout, b"late");
        assert!(live.is_empty(), "a chunk does not open a tail");
        live.open(&id(2), 16);
        live.close(&id(2));
        live.push(&id(2), Stream::Stdout, b"after the end");
        assert!(live.follow(&id(2)).is_none());
    }

    #[test]
    fn a_tail_keeps_the_first_bytes_up_to_its_limit() {
        let live = Live::default();
        let task = id(3);
        live.open(&task, 5);
        let mut follower = live.follow(&task).expect("open");
        live.push(&task, Stream::Stdout, b"abc");
        live.push(&task, Stream::Stdout, b"defgh");
        live.push(&task, Stream::Stdout, b"ijk");
        assert_eq!(follower.take().stdout, "abcde");
    }

    #[test]
    fn a_character_split_across_chunks_waits_for_its_end() {
        let live = Live::default();
        let task = id(4);
        live.open(&task, 64);
        let mut follower = live.follow(&task).expect("open");
        let text = "né".as_bytes();
        live.push(&task, Stream::Stdout, &text[..2]);
        assert_eq!(follower.take().stdout, "n");
        live.push(&task, Stream::Stdout, &text[2..]);
        assert_eq!(follower.take().stdout, "é");
        live.push(&task, Stream::Stdout, &[0xff, b'x']);
        assert_eq!(follower.take().stdout, "\u{fffd}x");
    }

    #[test]
    fn retain_closes_tails_of_tasks_that_left() {
        let live = Live::default();
        live.open(&id(5), 8);
        live.open(&id(6), 8);
        let mut gone = live.follow(&id(5)).expect("open");
        live.retain(|task| *task == id(6));
        assert!(gone.take().closed);
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn opening_again_starts_afresh_and_closes_old_followers() {
        let live = Live::default();
        let task = id(7);
        live.open(&task, 8);
        live.push(&task, Stream::Stdout, b"first");
        let mut old = live.follow(&task).expect("open");
        live.open(&task, 8);
        assert!(old.take().closed);
        assert_eq!(live.follow(&task).expect("open").take().stdout, "");
    }
}
