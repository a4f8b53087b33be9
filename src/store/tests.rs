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

fn task(id: &str, job: &str, state: TaskState, created_ms: i64) -> TaskRecord {
    TaskRecord {
        id: id.to_owned(),
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
    }
}

fn put(name: &str, satisfied: &[&str]) -> Write {
    Write::PutJob(Box::new(StoredJob {
        job: job(name),
        satisfied: satisfied.iter().map(|s| s.to_string()).collect(),
    }))
}

async fn conformance(store: impl Store) {
    store.commit(vec![put("b", &[]), put("a", &["b"])]).await.unwrap();
    // An update keeps the job's place in creation order.
    let mut changed = job("b");
    changed.success_count = 7;
    store
        .commit(vec![Write::PutJob(Box::new(StoredJob {
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
        .commit(vec![
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
        .map(|t| t.id)
        .collect();
    assert_eq!(open, ["t3", "t4"]);
    let newest: Vec<String> = store
        .job_tasks("a", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(newest, ["t3", "t2"]);
    assert_eq!(store.task("t1").await.unwrap().unwrap().stdout, "out");
    assert!(store.task("nope").await.unwrap().is_none());

    assert!(store.add_progress("t1", 5).await.unwrap());
    assert!(store.add_progress("t1", 2).await.unwrap());
    assert!(!store.add_progress("nope", 1).await.unwrap());
    // Rewriting a task keeps its progress.
    store
        .commit(vec![Write::PutTask(task("t1", "a", TaskState::Finished, 1))])
        .await
        .unwrap();
    assert_eq!(store.task("t1").await.unwrap().unwrap().elements_processed, 7);

    let durations = store.recent_durations(1).await.unwrap();
    assert_eq!(durations, [("a".to_owned(), 20.0)]);

    // Only final tasks beyond the newest one per job go; open tasks stay.
    assert_eq!(store.prune_history(1).await.unwrap(), 1);
    assert!(store.task("t1").await.unwrap().is_none());
    assert!(store.task("t3").await.unwrap().is_some());

    store
        .commit(vec![Write::DeleteJob("a".to_owned())])
        .await
        .unwrap();
    assert_eq!(store.load_jobs().await.unwrap().len(), 1);
    assert!(store.job_tasks("a", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(MemoryStore::default()).await;
}

#[tokio::test]
async fn sqlite_store_conforms_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    conformance(SqliteStore::open(dir.path()).await.unwrap()).await;
    // Reopening finds the same data, and migrations don't run twice.
    let again = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(again.load_jobs().await.unwrap()[0].job.name, "b");
}
