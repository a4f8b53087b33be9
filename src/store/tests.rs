//! One conformance suite, run against every store.

use super::*;
use crate::job::Job;

fn job(name: &str) -> Job {
    let body = format!(
        r#"{{"name":"{name}","command":"true","shell":true,"epsilon":"PT60S","executor":"","executorFlags":"",
        "taskInfoData":"","retries":2,"owner":"","ownerName":"","description":"","async":false,"successCount":0,
        "errorCount":0,"lastSuccess":"","lastError":"","cpus":0.1,"disk":256.0,"mem":128.0,"disabled":false,
        "softError":false,"dataProcessingJobType":false,"errorsSinceLastSuccess":0,"fetch":[],"uris":[],
        "environmentVariables":[],"arguments":[],"highPriority":false,"runAsUser":"root","concurrent":false,
        "maxCompletionTime":0,"constraints":[],"schedule":"R/2030-01-01T00:00:00Z/P1D","scheduleTimeZone":""}}"#
    );
    serde_json::from_str(&body).expect("valid job")
}

/// A task id for a short test name: the name is its job part, so reports can be compared by it.
fn tid(short: &str) -> TaskId {
    TaskId::new(0, 0, short, "")
}

/// Task ids by their short test names.
fn short(ids: &[TaskId]) -> Vec<&str> {
    ids.iter().map(TaskId::job).collect()
}

fn task(id: &str, job: &str, state: TaskState, created_ms: i64) -> TaskRecord {
    TaskRecord {
        id: tid(id),
        job: job.to_owned(),
        attempt: 0,
        due_ms: created_ms,
        arguments: String::new(),
        state,
        created_ms,
        started_ms: Some(created_ms),
        finished_ms: (!state.is_open()).then_some(created_ms + 10 * created_ms.min(5)),
        exit_code: None,
        message: String::new(),
        stdout: "out".to_owned(),
        stderr: String::new(),
        elements_processed: 0,
        worker: "w".to_owned(),
        scheduled: id.starts_with('s'),
    }
}

fn put(name: &str, satisfied: &[&str]) -> Write {
    Write::PutJob(Box::new(StoredJob {
        job: job(name),
        satisfied: satisfied.iter().map(|s| s.to_string()).collect(),
    }))
}

/// The ids of a job's newest tasks, newest first.
async fn task_ids(store: &impl Store, job: &str, limit: u32) -> Vec<String> {
    store
        .job_tasks(job, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.job().to_owned())
        .collect()
}

/// Commits a batch, returning the claims it lost.
async fn lost_claims(store: &impl Store, batch: &[Write]) -> Vec<String> {
    let lost = store.commit(batch).await.unwrap().lost_claims;
    short(&lost).into_iter().map(str::to_owned).collect()
}

/// A group committed again (its first outcome unknown) keeps its own run claims, and loses only
/// those another group made first.
async fn claims_by_group(store: &impl Store) {
    let claim = |due_ms: i64| Write::ClaimRun {
        job: "g".to_owned(),
        due_ms,
        task_id: tid(&format!("g{due_ms}")),
    };
    let first = [claim(1), claim(2)];
    assert!(
        store
            .commit_group(&first, 7)
            .await
            .unwrap()
            .lost_claims
            .is_empty()
    );
    assert!(
        store
            .commit_group(&first, 7)
            .await
            .unwrap()
            .lost_claims
            .is_empty(),
        "the same group again finds its own claims"
    );
    let later = [claim(2), claim(3)];
    let lost = store.commit_group(&later, 8).await.unwrap().lost_claims;
    assert_eq!(short(&lost), ["g2"], "another group's claim is lost");
    assert_eq!(
        lost_claims(store, &[claim(3)]).await,
        ["g3"],
        "a plain commit is a group of its own"
    );
}

/// API tokens are kept by name (hash only), and the audit log is read newest first, filtered,
/// and pruned by age.
async fn tokens_and_audit(store: &impl Store) {
    let token = |name: &str, role: &str, used: Option<i64>| StoredToken {
        name: name.to_owned(),
        role: role.to_owned(),
        hash: format!("hash-of-{name}-{role}"),
        created_ms: 5,
        last_used_ms: used,
    };
    store
        .commit(&[
            Write::PutToken(token("ci", "read", None)),
            Write::PutToken(token("ops", "admin", None)),
        ])
        .await
        .unwrap();
    // Replaced by name, then deleted, in the order written.
    store
        .commit(&[
            Write::PutToken(token("ci", "operate", Some(9))),
            Write::DeleteToken("ops".into()),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.load_tokens().await.unwrap(),
        [token("ci", "operate", Some(9))]
    );
    let entry = |at_ms: i64, principal: &str, job: Option<&str>| AuditEntry {
        at_ms,
        principal: principal.to_owned(),
        role: "admin".to_owned(),
        source: "127.0.0.1".to_owned(),
        method: "POST".to_owned(),
        route: "/v1/scheduler/iso8601".to_owned(),
        job: job.map(str::to_owned),
        outcome: "ok".to_owned(),
    };
    let entries = [
        entry(10, "admin", Some("a")),
        entry(20, "token:ci", Some("b")),
        entry(30, "admin", None),
    ];
    let writes: Vec<Write> = entries
        .iter()
        .cloned()
        .map(|e| Write::Audit(Box::new(e)))
        .collect();
    store.commit(&writes).await.unwrap();
    let all = AuditQuery {
        limit: 10,
        ..AuditQuery::default()
    };
    assert_eq!(
        store.audit(&all).await.unwrap(),
        [entries[2].clone(), entries[1].clone(), entries[0].clone()]
    );
    let of_a = AuditQuery {
        job: Some("a".into()),
        ..all.clone()
    };
    assert_eq!(store.audit(&of_a).await.unwrap(), [entries[0].clone()]);
    let by_admin_since = AuditQuery {
        principal: Some("admin".into()),
        since_ms: Some(15),
        ..all.clone()
    };
    assert_eq!(store.audit(&by_admin_since).await.unwrap(), [entries[2].clone()]);
    let report = store
        .commit(&[Write::PruneAudit {
            before_ms: 25,
            limit: 1,
        }])
        .await
        .unwrap();
    assert_eq!(report.pruned, 1, "at most the limit");
    let report = store
        .commit(&[Write::PruneAudit {
            before_ms: 25,
            limit: 10,
        }])
        .await
        .unwrap();
    assert_eq!(report.pruned, 1);
    assert_eq!(store.audit(&all).await.unwrap(), [entries[2].clone()]);
}

async fn conformance(store: impl Store) {
    store.commit(&[put("b", &[]), put("a", &["b"])]).await.unwrap();
    // An update keeps the job's place in creation order.
    let mut changed = job("b");
    changed.success_count = 7;
    store
        .commit(&[Write::PutJob(Box::new(StoredJob {
            job: changed,
            satisfied: vec![],
        }))])
        .await
        .unwrap();
    let jobs = store.load_jobs().await.unwrap();
    let names: Vec<&str> = jobs.iter().map(|s| s.job.name.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(jobs[0].job.success_count, 7);
    assert_eq!(jobs[1].satisfied, ["b"]);

    store
        .commit(&[
            Write::PutTask(task("t1", "a", TaskState::Finished, 1)),
            Write::PutTask(task("t2", "a", TaskState::Finished, 2)),
            Write::PutTask(task("t3", "a", TaskState::Running, 3)),
            Write::PutTask(task("t4", "b", TaskState::Queued, 4)),
        ])
        .await
        .unwrap();
    let open: Vec<String> = store
        .load_open_tasks()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.job().to_owned())
        .collect();
    assert_eq!(open, ["t3", "t4"]);
    assert_eq!(task_ids(&store, "a", 2).await, ["t3", "t2"]);
    assert_eq!(store.task(&tid("t1")).await.unwrap().unwrap().stdout, "out");
    assert!(store.task(&tid("nope")).await.unwrap().is_none());

    assert!(store.add_progress(&tid("t1"), 5).await.unwrap());
    assert!(store.add_progress(&tid("t1"), 2).await.unwrap());
    assert!(!store.add_progress(&tid("nope"), 1).await.unwrap());
    // Rewriting a task keeps its progress.
    store
        .commit(&[Write::PutTask(task("t1", "a", TaskState::Finished, 1))])
        .await
        .unwrap();
    assert_eq!(
        store.task(&tid("t1")).await.unwrap().unwrap().elements_processed,
        7
    );
    // The count saturates instead of overflowing (SQLite would turn it into an unreadable REAL).
    for _ in 0..2 {
        assert!(store.add_progress(&tid("t2"), i64::MAX).await.unwrap());
    }
    assert_eq!(
        store.task(&tid("t2")).await.unwrap().unwrap().elements_processed,
        i64::MAX
    );
    assert_eq!(store.job_tasks("a", 10).await.unwrap().len(), 3);

    let durations = store.recent_durations(1).await.unwrap();
    assert_eq!(durations, [("a".to_owned(), 20.0)]);

    // Only final tasks beyond the newest one per job go; open tasks stay.
    assert_eq!(store.prune_history(1).await.unwrap(), 1);
    assert!(store.task(&tid("t1")).await.unwrap().is_none());
    assert!(store.task(&tid("t3")).await.unwrap().is_some());

    // A batch with a task and a job written several times, and more tasks than one statement
    // holds, lands as if applied in order.
    let mut many = vec![
        Write::PutTask(task("m0", "a", TaskState::Queued, 20)),
        put("a", &[]),
        Write::PutTask(task("m0", "a", TaskState::Running, 20)),
    ];
    many.extend((1..150).map(|i| Write::PutTask(task(&format!("m{i}"), "a", TaskState::Finished, 20))));
    let mut counted = job("a");
    counted.success_count = 3;
    many.push(Write::PutJob(Box::new(StoredJob {
        job: counted,
        satisfied: vec!["b".to_owned()],
    })));
    many.push(Write::PutTask(task("m0", "a", TaskState::Failed, 20)));
    assert!(store.commit(&many).await.unwrap().lost_claims.is_empty());
    assert_eq!(
        store.task(&tid("m0")).await.unwrap().unwrap().state,
        TaskState::Failed
    );
    assert_eq!(
        store.job_tasks("a", 1000).await.unwrap().len(),
        150 + 2,
        "t2 and t3 were there"
    );
    let a = store
        .load_jobs()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.job.name == "a")
        .unwrap();
    assert_eq!((a.job.success_count, a.satisfied), (3, vec!["b".to_owned()]));
    store.commit(&[put("a", &["b"])]).await.unwrap();

    // A claimed run can be recorded once; a second claim is lost, and the task written after it in
    // the same batch is skipped while the rest of the batch is applied.
    let claim = |task_id: &str| Write::ClaimRun {
        job: "a".to_owned(),
        due_ms: 1000,
        task_id: tid(task_id),
    };
    let lost = store
        .commit(&[claim("c1"), Write::PutTask(task("c1", "a", TaskState::Queued, 9))])
        .await
        .unwrap();
    assert_eq!(lost, CommitReport::default());
    let lost = store
        .commit(&[
            claim("c2"),
            Write::PutTask(task("c2", "a", TaskState::Queued, 9)),
            Write::PutTask(task("c3", "a", TaskState::Queued, 9)),
        ])
        .await
        .unwrap();
    assert_eq!(short(&lost.lost_claims), ["c2"]);
    assert!(
        store.task(&tid("c2")).await.unwrap().is_none(),
        "the lost run's task was skipped"
    );
    assert!(
        store.task(&tid("c3")).await.unwrap().is_some(),
        "the rest of the batch was applied"
    );
    assert!(store.task(&tid("c1")).await.unwrap().is_some());
    let other = Write::ClaimRun {
        job: "a".to_owned(),
        due_ms: 2000,
        task_id: tid("c4"),
    };
    assert!(lost_claims(&store, &[other]).await.is_empty());

    store.commit(&[Write::DeleteJob("a".to_owned())]).await.unwrap();
    assert_eq!(store.load_jobs().await.unwrap().len(), 1);
    assert!(store.job_tasks("a", 10).await.unwrap().is_empty());
    // A job created again under the name starts with no claimed runs.
    assert!(lost_claims(&store, &[claim("c5")]).await.is_empty());

    // Pruning forgets claims due before the horizon and keeps the rest.
    let claim_at = |due_ms: i64, task_id: &str| Write::ClaimRun {
        job: "p".to_owned(),
        due_ms,
        task_id: tid(task_id),
    };
    let old: Vec<Write> = (0..1200).map(|i| claim_at(i, &format!("o{i}"))).collect();
    assert!(store.commit(&old).await.unwrap().lost_claims.is_empty());
    assert!(lost_claims(&store, &[claim_at(5000, "n")]).await.is_empty());
    assert_eq!(
        store.prune_claims(2000).await.unwrap(),
        1201,
        "the 1,200 and c5 (due at 1000)"
    );
    assert!(lost_claims(&store, &[claim_at(7, "again")]).await.is_empty());
    assert_eq!(lost_claims(&store, &[claim_at(5000, "twice")]).await, ["twice"]);

    // The launch mark starts at 0 and is only ever raised, within a batch and across them.
    assert_eq!(store.launched_through().await.unwrap(), 0);
    let marks = [
        Write::LaunchedThrough(50),
        Write::LaunchedThrough(70),
        Write::LaunchedThrough(60),
    ];
    store.commit(&marks).await.unwrap();
    assert_eq!(store.launched_through().await.unwrap(), 70);
    store.commit(&[Write::LaunchedThrough(10)]).await.unwrap();
    assert_eq!(store.launched_through().await.unwrap(), 70);
    store.commit(&[Write::LaunchedThrough(90)]).await.unwrap();
    assert_eq!(store.launched_through().await.unwrap(), 90);

    // The pause: none at first, the last write of a batch wins, and resuming clears it.
    assert_eq!(store.paused_since().await.unwrap(), None);
    store
        .commit(&[Write::SetPause(Some(5)), Write::SetPause(Some(8))])
        .await
        .unwrap();
    assert_eq!(store.paused_since().await.unwrap(), Some(8));
    store.commit(&[Write::SetPause(None)]).await.unwrap();
    assert_eq!(store.paused_since().await.unwrap(), None);

    progress_through_commit(&store).await;
    pruning_through_commit(&store).await;
    tokens_and_audit(&store).await;
    notices(&store).await;
}

fn notice(id: &str, created_ms: i64) -> Write {
    Write::PutNotice(Box::new(StoredNotice {
        id: id.to_owned(),
        created_ms,
        body: format!("{{\"id\":\"{id}\"}}"),
    }))
}

/// The notification outbox: a notice is put once (a second put, by another leader say, is
/// reported and changes nothing), read back while pending, oldest first, and pruned by age.
async fn notices(store: &impl Store) {
    let report = store
        .commit(&[notice("n2", 20), notice("n1", 10), notice("n3", 30)])
        .await
        .unwrap();
    assert!(report.known_notices.is_empty());
    let ids = |rows: Vec<StoredNotice>| rows.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(store.pending_notices(10).await.unwrap()), ["n1", "n2", "n3"]);
    assert_eq!(ids(store.pending_notices(2).await.unwrap()), ["n1", "n2"]);
    let done = Write::NoticeDone {
        id: "n1".to_owned(),
        delivered: true,
        at_ms: 40,
    };
    let given_up = Write::NoticeDone {
        id: "n3".to_owned(),
        delivered: false,
        at_ms: 40,
    };
    store.commit(&[done, given_up]).await.unwrap();
    assert_eq!(ids(store.pending_notices(10).await.unwrap()), ["n2"]);
    // Put again after it was delivered (a new leader making the same event): still done.
    let report = store.commit(&[notice("n1", 50), notice("n4", 50)]).await.unwrap();
    assert_eq!(report.known_notices, ["n1"]);
    let pending = store.pending_notices(10).await.unwrap();
    assert_eq!(pending[0].body, r#"{"id":"n2"}"#, "the body as written");
    assert_eq!(ids(pending), ["n2", "n4"]);
    let report = store
        .commit(&[Write::PruneNotices {
            before_ms: 25,
            limit: 10,
        }])
        .await
        .unwrap();
    assert_eq!(report.pruned, 2, "n1 (done) and n2 (pending) are older");
    assert_eq!(ids(store.pending_notices(10).await.unwrap()), ["n4"]);
    // Done for a pruned notice changes nothing.
    let late = Write::NoticeDone {
        id: "n2".to_owned(),
        delivered: true,
        at_ms: 60,
    };
    store.commit(&[late]).await.unwrap();
}

fn progress(task_id: &str, elements: i64) -> Write {
    Write::AddProgress {
        task_id: tid(task_id),
        elements,
    }
}

fn elements(task: Option<TaskRecord>) -> i64 {
    task.expect("the task exists").elements_processed
}

/// Progress is a write like any other: applied in batch order, never dropped by coalescing, and
/// a task it does not find is reported while the rest of the batch is applied.
async fn progress_through_commit(store: &impl Store) {
    store.commit(&[put("g", &[])]).await.unwrap();
    let report = store
        .commit(&[
            Write::PutTask(task("g1", "g", TaskState::Queued, 30)),
            progress("g1", 3),
            progress("ghost", 1),
            Write::PutTask(task("g1", "g", TaskState::Running, 30)),
            progress("g1", 4),
            progress("g1", -9),
            progress("ghost", 2),
            Write::PutTask(task("g1", "g", TaskState::Finished, 30)),
            Write::PutTask(task("g2", "g", TaskState::Finished, 31)),
        ])
        .await
        .unwrap();
    assert_eq!(short(&report.unknown_progress), ["ghost"], "reported once");
    assert!(report.lost_claims.is_empty());
    let g1 = store.task(&tid("g1")).await.unwrap();
    assert_eq!(g1.as_ref().map(|t| t.state), Some(TaskState::Finished));
    assert_eq!(
        elements(g1),
        7,
        "both additions count, the negative one adds nothing"
    );

    // Progress before the put that creates its task finds no task.
    let report = store
        .commit(&[
            progress("g3", 5),
            Write::PutTask(task("g3", "g", TaskState::Queued, 32)),
        ])
        .await
        .unwrap();
    assert_eq!(short(&report.unknown_progress), ["g3"]);
    assert_eq!(elements(store.task(&tid("g3")).await.unwrap()), 0);

    // Saturation within one batch and across batches.
    let report = store
        .commit(&[progress("g2", i64::MAX), progress("g2", i64::MAX)])
        .await
        .unwrap();
    assert_eq!(report, CommitReport::default());
    store.commit(&[progress("g2", 1)]).await.unwrap();
    assert_eq!(elements(store.task(&tid("g2")).await.unwrap()), i64::MAX);
    assert!(store.add_progress(&tid("g3"), 2).await.unwrap());
    assert!(!store.add_progress(&tid("ghost"), 2).await.unwrap());
    assert_eq!(elements(store.task(&tid("g3")).await.unwrap()), 2);

    // Progress before its job's delete counts (and goes with the job); after it, nothing is left.
    let report = store
        .commit(&[progress("g1", 1), Write::DeleteJob("g".to_owned())])
        .await
        .unwrap();
    assert_eq!(report, CommitReport::default());
    let report = store
        .commit(&[
            put("g", &[]),
            Write::PutTask(task("g4", "g", TaskState::Queued, 33)),
            Write::DeleteJob("g".to_owned()),
            progress("g4", 1),
        ])
        .await
        .unwrap();
    assert_eq!(short(&report.unknown_progress), ["g4"]);
    assert!(store.load_jobs().await.unwrap().iter().all(|s| s.job.name != "g"));
}

/// Pruning deletes through commit, in bounded writes, and in batch order with other writes.
async fn pruning_through_commit(store: &impl Store) {
    store.commit(&[put("h", &[])]).await.unwrap();
    store
        .commit(&[
            Write::PutTask(task("h1", "h", TaskState::Finished, 40)),
            Write::PutTask(task("h2", "h", TaskState::Running, 41)),
        ])
        .await
        .unwrap();
    let ids = |ids: &[&str]| Write::PruneTasks(ids.iter().map(|id| tid(id)).collect());
    let report = store.commit(&[ids(&["h1", "h2", "nope"])]).await.unwrap();
    assert_eq!(report.pruned, 1, "only the final task goes");
    assert!(store.task(&tid("h1")).await.unwrap().is_none());
    assert!(
        store.task(&tid("h2")).await.unwrap().is_some(),
        "an open task stays"
    );

    // In batch order: a task written after its prune stays, one written before it goes.
    let report = store
        .commit(&[
            Write::PutTask(task("h3", "h", TaskState::Finished, 42)),
            ids(&["h3", "h4"]),
            Write::PutTask(task("h4", "h", TaskState::Finished, 43)),
            Write::PutTask(task("h3", "h", TaskState::Finished, 42)),
            Write::PutTask(task("h5", "h", TaskState::Finished, 44)),
            ids(&["h5"]),
        ])
        .await
        .unwrap();
    assert_eq!(report.pruned, 2);
    assert_eq!(task_ids(store, "h", 10).await, ["h4", "h3", "h2"]);

    // A claim pruning write removes at most its limit, and only claims due before the horizon.
    assert_eq!(store.prune_claims(i64::MAX).await.unwrap(), 2, "p at 7 and 5000");
    let claims: Vec<Write> = (0..30)
        .map(|i| Write::ClaimRun {
            job: "h".to_owned(),
            due_ms: i * 10,
            task_id: tid(&format!("hc{i}")),
        })
        .collect();
    assert!(store.commit(&claims).await.unwrap().lost_claims.is_empty());
    let prune = |limit| Write::PruneClaims {
        before_ms: 200,
        limit,
    };
    assert_eq!(store.commit(&[prune(15)]).await.unwrap().pruned, 15);
    assert_eq!(store.commit(&[prune(15)]).await.unwrap().pruned, 5);
    assert_eq!(store.commit(&[prune(15)]).await.unwrap().pruned, 0);
    let lost = store.commit(&claims).await.unwrap().lost_claims;
    assert_eq!(lost.len(), 10, "the claims due at 200 and later stayed");
    assert_eq!(store.prune_claims(1000).await.unwrap(), 30);
    // Claimed, pruned and claimed again within one batch: the last claim is new.
    let again = |task_id: &str| Write::ClaimRun {
        job: "h".to_owned(),
        due_ms: 5,
        task_id: tid(task_id),
    };
    let report = store
        .commit(&[again("x1"), prune(100), again("x2")])
        .await
        .unwrap();
    assert_eq!((report.lost_claims.len(), report.pruned), (0, 1));
    store.commit(&[Write::DeleteJob("h".to_owned())]).await.unwrap();
}

fn describe(batch: Vec<&Write>) -> Vec<String> {
    batch
        .into_iter()
        .map(|w| match w {
            Write::PutJob(s) => format!("job {} {}", s.job.name, s.job.success_count),
            Write::DeleteJob(name) => format!("delete {name}"),
            Write::PutTask(t) => format!("task {} {}", t.id.job(), t.state.as_str()),
            Write::ClaimRun { task_id, .. } => format!("claim {}", task_id.job()),
            Write::LaunchedThrough(ms) => format!("mark {ms}"),
            Write::AddProgress { task_id, elements } => format!("progress {} {elements}", task_id.job()),
            Write::PruneTasks(ids) => format!("prune {}", short(ids).join(" ")),
            Write::PruneClaims { before_ms, .. } => format!("prune claims {before_ms}"),
            Write::PutToken(t) => format!("token {}", t.name),
            Write::DeleteToken(name) => format!("delete token {name}"),
            Write::Audit(e) => format!("audit {}", e.at_ms),
            Write::PruneAudit { before_ms, .. } => format!("prune audit {before_ms}"),
            Write::SetPause(since) => format!("pause {since:?}"),
            Write::PutNotice(n) => format!("notice {}", n.id),
            Write::NoticeDone { id, .. } => format!("notice done {id}"),
            Write::PruneNotices { before_ms, .. } => format!("prune notices {before_ms}"),
        })
        .collect()
}

fn counted(name: &str, n: u64) -> Write {
    let mut j = job(name);
    j.success_count = n;
    Write::PutJob(Box::new(StoredJob {
        job: j,
        satisfied: vec![],
    }))
}

#[test]
fn coalescing_keeps_the_last_write_of_each_job_and_task() {
    let claim = Write::ClaimRun {
        job: "a".to_owned(),
        due_ms: 1,
        task_id: tid("t1"),
    };
    let batch = vec![
        Write::LaunchedThrough(3),
        claim,
        Write::PutTask(task("t1", "a", TaskState::Queued, 1)),
        Write::LaunchedThrough(5),
        counted("a", 1),
        Write::PutTask(task("t1", "a", TaskState::Running, 1)),
        Write::PutTask(task("u1", "b", TaskState::Running, 1)),
        counted("b", 1),
        Write::PutTask(task("t1", "a", TaskState::Finished, 1)),
        counted("a", 2),
        Write::DeleteJob("b".to_owned()),
        counted("b", 0),
        Write::LaunchedThrough(4),
    ];
    assert_eq!(coalesce_runs(&batch).len(), 1);
    assert_eq!(
        describe(coalesce(&batch)),
        [
            "delete b",
            "claim t1",
            "job a 2",
            "job b 0",
            "task t1 finished",
            "mark 5"
        ]
    );
}

/// Progress is never dropped, follows every put of its task, and runs break where moving it
/// would change what it finds: at a later put of its task, at any later delete, at pruning.
#[test]
fn coalescing_keeps_progress_in_order() {
    let progress = |task_id: &str, elements| Write::AddProgress {
        task_id: tid(task_id),
        elements,
    };
    let batch = vec![
        progress("t1", 1),
        Write::PutTask(task("t1", "a", TaskState::Queued, 1)),
        progress("t1", 2),
        Write::PutTask(task("u1", "b", TaskState::Queued, 1)),
        progress("t1", 3),
        Write::PutTask(task("u1", "b", TaskState::Running, 1)),
        Write::LaunchedThrough(7),
        counted("a", 1),
        Write::DeleteJob("b".to_owned()),
        Write::PutTask(task("t2", "a", TaskState::Queued, 1)),
        Write::PruneTasks(vec![tid("t0")]),
        Write::PruneClaims {
            before_ms: 9,
            limit: 10,
        },
        counted("a", 2),
        counted("a", 3),
    ];
    let runs: Vec<Vec<String>> = coalesce_runs(&batch).into_iter().map(describe).collect();
    assert_eq!(
        runs,
        [
            vec!["progress t1 1"],
            vec![
                "job a 1",
                "task t1 queued",
                "task u1 running",
                "progress t1 2",
                "progress t1 3",
                "mark 7"
            ],
            vec!["delete b", "task t2 queued"],
            vec!["prune t0"],
            vec!["prune claims 9"],
            vec!["job a 3"],
        ]
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(MemoryStore::default()).await;
}

#[tokio::test]
async fn sqlite_store_conforms_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    conformance(SqliteStore::open(dir.path()).await.unwrap()).await;
    claims_by_group(&SqliteStore::open(dir.path()).await.unwrap()).await;
    // Reopening finds the same data, and migrations don't run twice.
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(again.load_jobs().await.unwrap()[0].job.name, "b");
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(&again.pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

/// A count SQLite stored as REAL (before sums were clamped) is an error on read, not a panic, and
/// the next start repairs it.
#[tokio::test]
async fn sqlite_unreadable_values_are_errors_and_old_reals_are_repaired() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store
        .commit(&[
            put("a", &[]),
            Write::PutTask(task("t1", "a", TaskState::Finished, 1)),
        ])
        .await
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("kairos.db").display());
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // What two increments of i64::MAX left behind.
    sqlx::raw_sql("UPDATE tasks SET elements_processed = 9223372036854775807 + 9223372036854775807;")
        .execute(&mut raw)
        .await
        .unwrap();
    let err = store
        .task(&tid("t1"))
        .await
        .expect_err("a REAL count is not an i64");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(store.job_tasks("a", 10).await.is_err());
    // The schema goes back to before the repair step only once the store is closed: its pooled
    // connections cache statements prepared against the schema they saw.
    store.pool.close().await;
    drop(store);
    sqlx::raw_sql(
        "DELETE FROM schema_version WHERE version > 3;
         DROP TABLE launches;
         ALTER TABLE tasks DROP COLUMN scheduled;
         DROP TABLE tokens;
         DROP TABLE audit;
         DROP TABLE pause;
         DROP TABLE notices;
         ALTER TABLE run_claims DROP COLUMN claimant;",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(
        again.task(&tid("t1")).await.unwrap().unwrap().elements_processed,
        i64::MAX
    );
    raw.close().await.unwrap();
}

/// Writes a task, breaks its stored row with `sql`, and expects reading it to be a `Corrupt`
/// error naming the task (`what`), not a panic and not a truncated value.
async fn broken_row_is_corrupt(
    store: &impl Store,
    (sql, what): (&str, &str),
    corrupt: impl AsyncFnOnce(&str),
) {
    store
        .commit(&[
            put("a", &[]),
            Write::PutTask(task("t9", "a", TaskState::Finished, 1)),
        ])
        .await
        .unwrap();
    corrupt(sql).await;
    let err = store.job_tasks("a", 10).await.expect_err(sql);
    assert!(
        matches!(&err, Error::Corrupt { what: w, .. } if w == what),
        "{sql}: {err}"
    );
}

/// Statements that break the stored task, and the task the error must name.
const BROKEN: [(&str, &str); 4] = [
    ("UPDATE tasks SET attempt = 4294967296", "task ct:0:0:t9:"),
    ("UPDATE tasks SET attempt = -1", "task ct:0:0:t9:"),
    ("UPDATE tasks SET exit_code = 2147483648", "task ct:0:0:t9:"),
    ("UPDATE tasks SET id = 'not an id'", "task not an id"),
];

#[tokio::test]
async fn sqlite_broken_rows_are_corrupt() {
    use sqlx::Connection;
    for broken in BROKEN {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let url = format!("sqlite://{}", dir.path().join("kairos.db").display());
        broken_row_is_corrupt(&store, broken, async |sql: &str| {
            let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut raw)
                .await
                .unwrap();
            raw.close().await.unwrap();
        })
        .await;
    }
}

#[tokio::test]
async fn postgres_broken_rows_are_corrupt() {
    for broken in BROKEN {
        let db = TestDatabase::create().await;
        let store = PostgresStore::open(&db.url).await.unwrap();
        broken_row_is_corrupt(&store, broken, async |sql: &str| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut db.connect().await)
                .await
                .unwrap();
        })
        .await;
        drop(store);
        db.remove().await;
    }
}

/// A database of its own for one PostgreSQL test, on the server named by
/// `KAIROS_TEST_POSTGRES_URL`, since tests run in parallel and advisory locks are per database.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};

        use sqlx::Connection;

        static NEXT: AtomicU64 = AtomicU64::new(0);
        let admin_url = std::env::var("KAIROS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "KAIROS_TEST_POSTGRES_URL is not set, and the PostgreSQL store tests need a server: \
                 run `bash scripts/postgres.sh` and export the URL it prints as KAIROS_TEST_POSTGRES_URL"
            )
        });
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "kairos_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to KAIROS_TEST_POSTGRES_URL: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        TestDatabase { admin_url, name, url }
    }

    async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }

    /// Drops the database, ending whatever sessions still use it.
    async fn remove(self) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// The same server URL pointing at another database; the query string stays.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").expect("a postgres:// URL") + 3;
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

async fn schema_versions(db: &TestDatabase) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(&mut db.connect().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_store_conforms() {
    let db = TestDatabase::create().await;
    conformance(PostgresStore::open(&db.url).await.unwrap()).await;
    claims_by_group(&PostgresStore::open(&db.url).await.unwrap()).await;
    // Reopening finds the same data, and migrations don't run twice.
    let again = PostgresStore::open(&db.url).await.unwrap();
    assert_eq!(again.load_jobs().await.unwrap()[0].job.name, "b");
    assert_eq!(schema_versions(&db).await, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    drop(again);
    db.remove().await;
}

#[tokio::test]
async fn postgres_breaks_ties_like_sqlite() {
    // Tasks created in the same millisecond come newest-written first, as SQLite's rowid orders them.
    async fn newest(store: &impl Store) -> Vec<String> {
        store
            .commit(&[
                Write::PutTask(task("x1", "a", TaskState::Finished, 5)),
                Write::PutTask(task("x2", "a", TaskState::Finished, 5)),
                Write::PutTask(task("x3", "a", TaskState::Finished, 5)),
            ])
            .await
            .unwrap();
        // Rewriting a task keeps its place.
        store
            .commit(&[Write::PutTask(task("x1", "a", TaskState::Finished, 5))])
            .await
            .unwrap();
        store
            .job_tasks("a", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id.job().to_owned())
            .collect()
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = newest(&SqliteStore::open(dir.path()).await.unwrap()).await;
    let db = TestDatabase::create().await;
    let postgres = newest(&PostgresStore::open(&db.url).await.unwrap()).await;
    assert_eq!(sqlite, ["x3", "x2", "x1"]);
    assert_eq!(postgres, sqlite);
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_servers_starting_together_migrate_once() {
    let db = TestDatabase::create().await;
    let opened = futures_util::future::join_all((0..4).map(|_| PostgresStore::open(&db.url))).await;
    for store in &opened {
        assert!(
            store.is_ok(),
            "a concurrent open failed: {:?}",
            store.as_ref().err()
        );
    }
    assert_eq!(schema_versions(&db).await, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    drop(opened);
    db.remove().await;
}

#[tokio::test]
async fn postgres_run_is_claimed_once() {
    let db = TestDatabase::create().await;
    let a = PostgresStore::open(&db.url).await.unwrap();
    let b = PostgresStore::open(&db.url).await.unwrap();
    assert!(a.claim_run("j", 1000).await.unwrap());
    assert!(!b.claim_run("j", 1000).await.unwrap());
    assert!(!a.claim_run("j", 1000).await.unwrap());
    assert!(b.claim_run("j", 2000).await.unwrap());
    assert!(b.claim_run("k", 1000).await.unwrap());

    // Racing servers: exactly one wins.
    let racers = (0..8).map(|i| if i % 2 == 0 { &a } else { &b }.claim_run("j", 3000));
    let won = futures_util::future::join_all(racers).await;
    assert_eq!(won.into_iter().filter(|w| *w.as_ref().unwrap()).count(), 1);

    // Deleting a job forgets its claims, so a job created again under its name can run.
    a.commit(&[Write::DeleteJob("j".to_owned())]).await.unwrap();
    assert!(b.claim_run("j", 1000).await.unwrap());
    assert!(!a.claim_run("k", 1000).await.unwrap());
    drop((a, b));
    db.remove().await;
}

/// The leader lease of the tests: long enough that no test loses it by accident.
const LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// A leader that stops renewing (frozen: its session stays open and keeps the lock) loses the
/// lease when it runs out: a standby ends its sessions and takes over in a new term, and the
/// old term's commits are refused, even on connections opened afterwards.
#[tokio::test]
async fn postgres_takes_over_from_a_frozen_leader_and_fences_it() {
    let db = TestDatabase::create().await;
    let a = PostgresStore::open(&db.url).await.unwrap();
    let b = PostgresStore::open(&db.url).await.unwrap();
    let short = std::time::Duration::from_millis(1500);
    let mut frozen = a
        .try_acquire_leadership("a:4400", short)
        .await
        .unwrap()
        .expect("a leads");
    let old_term = a.for_term(frozen.epoch());
    let before = Write::PutJob(Box::new(StoredJob {
        job: job("before"),
        satisfied: vec![],
    }));
    old_term.commit(&[before]).await.unwrap();
    // A pooled connection of the old term is busy in a transaction when the lease runs out.
    let mut busy = a.pool.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *busy).await.unwrap();

    assert!(
        b.try_acquire_leadership("b:4400", LEASE).await.unwrap().is_none(),
        "the lease still runs"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let successor = loop {
        if let Some(guard) = b.try_acquire_leadership("b:4400", LEASE).await.unwrap() {
            break guard;
        }
        assert!(std::time::Instant::now() < deadline, "b never took over");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(successor.epoch(), frozen.epoch() + 1);
    assert_eq!(a.current_leader().await.unwrap().as_deref(), Some("b:4400"));
    // The frozen leader wakes up: its lease is gone, and so are its sessions.
    assert!(!frozen.renew().await);
    assert!(sqlx::query("SELECT 1").execute(&mut *busy).await.is_err());
    let late = Write::PutJob(Box::new(StoredJob {
        job: job("late"),
        satisfied: vec![],
    }));
    let refused = old_term.commit(&[late]).await;
    assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
    let names: Vec<String> = b
        .load_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.job.name)
        .collect();
    assert_eq!(names, ["before"]);
    b.for_term(successor.epoch())
        .commit(&[Write::DeleteJob("before".to_owned())])
        .await
        .unwrap();
    successor.close().await.unwrap();
    drop((a, b, old_term, busy));
    db.remove().await;
}

/// Takes leadership, retrying while the server is still ending the previous leader's session.
async fn acquire_soon(store: &PostgresStore, holder: &str) -> LeaderGuard {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(guard) = store.try_acquire_leadership(holder, LEASE).await.unwrap() {
            return guard;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{holder} never became leader"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn postgres_leadership_passes_between_servers() {
    let db = TestDatabase::create().await;
    let a = PostgresStore::open(&db.url).await.unwrap();
    let b = PostgresStore::open(&db.url).await.unwrap();
    assert_eq!(a.current_leader().await.unwrap(), None);

    let mut first = a
        .try_acquire_leadership("a:4400", LEASE)
        .await
        .unwrap()
        .expect("the first server leads");
    assert_eq!(first.holder(), "a:4400");
    assert!(first.renew().await);
    assert!(b.try_acquire_leadership("b:4400", LEASE).await.unwrap().is_none());
    // The lock belongs to a session, not to a store: asking again from the same store fails too.
    assert!(a.try_acquire_leadership("a:4400", LEASE).await.unwrap().is_none());
    assert_eq!(b.current_leader().await.unwrap().as_deref(), Some("a:4400"));

    first.close().await.unwrap();
    assert_eq!(b.current_leader().await.unwrap(), None);
    let second = b
        .try_acquire_leadership("b:4400", LEASE)
        .await
        .unwrap()
        .expect("the lock was released");
    assert_eq!(a.current_leader().await.unwrap().as_deref(), Some("b:4400"));

    // Dropping the guard without closing it releases the lock as well.
    drop(second);
    let third = acquire_soon(&a, "a:4400").await;
    assert_eq!(b.current_leader().await.unwrap().as_deref(), Some("a:4400"));
    third.close().await.unwrap();
    drop((a, b));
    db.remove().await;
}

#[tokio::test]
async fn postgres_leadership_ends_with_its_connection() {
    let db = TestDatabase::create().await;
    let a = PostgresStore::open(&db.url).await.unwrap();
    let b = PostgresStore::open(&db.url).await.unwrap();
    let mut leader = a
        .try_acquire_leadership("a:4400", LEASE)
        .await
        .unwrap()
        .expect("a leads");
    assert!(leader.renew().await);

    // End the leader's session from outside, as a database restart or a network failure would.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND objsubid = 1
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid::bigint = ($1 >> 32) AND objid::bigint = ($1 & 4294967295)",
    )
    .bind(postgres::LEADER_LOCK)
    .fetch_all(&mut db.connect().await)
    .await
    .unwrap();
    assert_eq!(ended, [true]);

    assert!(!leader.renew().await);
    assert!(!leader.renew().await, "lost leadership stays lost");
    let successor = acquire_soon(&b, "b:4400").await;
    assert_eq!(a.current_leader().await.unwrap().as_deref(), Some("b:4400"));
    // Closing a guard whose connection is gone is harmless and leaves the successor alone.
    leader.close().await.unwrap();
    assert_eq!(a.current_leader().await.unwrap().as_deref(), Some("b:4400"));
    successor.close().await.unwrap();
    drop((a, b));
    db.remove().await;
}

#[test]
fn postgres_urls_lose_their_password() {
    let cases = [
        (
            "postgres://kairos:s3cret@db.example:5432/kairos",
            "postgres://kairos@db.example:5432/kairos",
        ),
        (
            "postgres://kairos:s3/c?r@t@db/kairos",
            "postgres://kairos@db/kairos",
        ),
        (
            "postgres://db/kairos?sslmode=require&password=s3cret",
            "postgres://db/kairos?sslmode=require&password=<redacted>",
        ),
        ("postgres://kairos@db/kairos", "postgres://kairos@db/kairos"),
        ("host=db password=s3cret", "<not a postgres:// URL>"),
    ];
    for (url, expected) in cases {
        assert_eq!(postgres::redact_url(url), expected, "for {url}");
    }
}

#[tokio::test]
async fn postgres_open_errors_hide_the_password() {
    // Nothing listens on port 1, and a port that is not a number does not parse.
    for url in [
        "postgres://kairos:s3cret@127.0.0.1:1/kairos",
        "postgres://kairos:s3cret@127.0.0.1:port/kairos",
    ] {
        let Err(error) = PostgresStore::open(url).await else {
            panic!("{url} should not open");
        };
        let text = format!("{error} / {error:?}");
        assert!(matches!(error, Error::Open { .. }), "{text}");
        assert!(text.contains("127.0.0.1"), "the location is named: {text}");
        assert!(!text.contains("s3cret"), "the password leaked: {text}");
    }
}
