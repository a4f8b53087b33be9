//! Tests for the job graph: tables for validation, readiness and the exports,
//! and proptest properties checked against a naive reference model.

use super::{Error, JobGraph};
use petgraph::graph::DiGraph;
use proptest::prelude::*;
use std::collections::HashMap;

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Build a graph from `(job, parents)` rows, in order; every row must be accepted.
fn build(rows: &[(&str, &[&str])]) -> JobGraph {
    let mut g = JobGraph::new();
    for (job, parents) in rows {
        g.set_parents(job, &strings(parents))
            .unwrap_or_else(|e| panic!("building {job}: {e:?}"));
    }
    g
}

fn cycle(path: &[&str]) -> Error {
    Error::Cycle { path: strings(path) }
}

fn unknown(child: &str, parent: &str) -> Error {
    Error::UnknownParent {
        child: child.into(),
        parent: parent.into(),
    }
}

/// Per job: its parents, children and satisfied parents.
type Links = Vec<(Vec<String>, Vec<String>, Vec<String>)>;

/// Everything observable about a graph, to prove a rejected change left it alone.
fn snapshot(g: &JobGraph) -> (String, Links) {
    let per_job = g
        .names()
        .iter()
        .map(|n| (g.parents(n), g.children(n), g.satisfied_parents(n)))
        .collect();
    (g.to_dot(), per_job)
}

#[test]
fn validation_table() {
    type Row<'a> = (
        &'a str,
        &'a [(&'a str, &'a [&'a str])],
        &'a str,
        &'a [&'a str],
        Vec<Error>,
    );
    let chain: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["b"])];
    let rows: Vec<Row> = vec![
        ("valid new job", chain, "d", &["c", "a"], vec![]),
        ("valid existing job", chain, "c", &["a"], vec![]),
        ("unknown parent", chain, "d", &["x"], vec![unknown("d", "x")]),
        (
            "self parent",
            chain,
            "c",
            &["c"],
            vec![Error::SelfParent { job: "c".into() }],
        ),
        (
            "no parents",
            chain,
            "d",
            &[],
            vec![Error::NoParents { job: "d".into() }],
        ),
        (
            "3-cycle on update",
            chain,
            "a",
            &["c"],
            vec![cycle(&["a", "b", "c", "a"])],
        ),
        ("2-cycle", chain, "a", &["b"], vec![cycle(&["a", "b", "a"])]),
        (
            "several problems, sorted and deduplicated",
            chain,
            "a",
            &["z", "c", "a", "y", "z", "a", "b"],
            vec![
                unknown("a", "y"),
                unknown("a", "z"),
                Error::SelfParent { job: "a".into() },
                cycle(&["a", "b", "a"]),
                cycle(&["a", "b", "c", "a"]),
            ],
        ),
        (
            "shortest path is reported",
            &[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["c", "a"])],
            "a",
            &["d"],
            vec![cycle(&["a", "d", "a"])],
        ),
    ];
    for (what, graph, child, parents, expected) in rows {
        let mut g = build(graph);
        let parents = strings(parents);
        let before = snapshot(&g);
        let existed = g.contains(child);
        let expected = if expected.is_empty() {
            Ok(())
        } else {
            Err(expected)
        };
        assert_eq!(g.check_parents(child, &parents), expected, "{what}");
        assert_eq!(snapshot(&g), before, "{what}: check_parents changed the graph");
        // set_parents performs the same checks, except that no parents is allowed.
        let set = g.set_parents(child, &parents);
        if parents.is_empty() {
            assert_eq!(set, Ok(()), "{what}");
        } else {
            assert_eq!(set, expected, "{what}");
        }
        if set.is_err() {
            assert_eq!(
                snapshot(&g),
                before,
                "{what}: a failed set_parents changed the graph"
            );
            assert_eq!(g.contains(child), existed, "{what}");
        }
    }
}

#[test]
fn failed_set_parents_on_a_new_job_does_not_add_it() {
    let mut g = build(&[("a", &[])]);
    let dot = g.to_dot();
    assert!(g.set_parents("new", &strings(&["a", "missing"])).is_err());
    assert!(!g.contains("new"));
    assert_eq!(g.to_dot(), dot);
    assert_eq!(g.children("a"), Vec::<String>::new());
}

#[test]
fn error_messages() {
    let table = [
        (
            cycle(&["a", "b", "c", "a"]),
            "adding parents to 'a' would create a cycle: a -> b -> c -> a",
        ),
        (
            unknown("b", "x"),
            "job 'b' names parent 'x', which does not exist",
        ),
        (
            Error::SelfParent { job: "a".into() },
            "job 'a' cannot be its own parent",
        ),
        (
            Error::NoParents { job: "d".into() },
            "dependent job 'd' must have at least one parent",
        ),
    ];
    for (error, message) in table {
        assert_eq!(error.to_string(), message);
    }
}

#[derive(Debug)]
enum Step {
    Success(&'static str, &'static [&'static str]),
    Reset(&'static str),
}
use Step::{Reset, Success};

fn run_steps(g: &mut JobGraph, steps: &[Step]) {
    for (i, step) in steps.iter().enumerate() {
        match step {
            Success(job, ready) => {
                assert_eq!(g.record_success(job), strings(ready), "step {i}: {step:?}");
            }
            Reset(job) => g.reset(job),
        }
    }
}

/// Chronos' JobGraphSpec graph: A→B, A→C, B→D, B→E, C→E.
fn spec_graph() -> JobGraph {
    build(&[
        ("A", &[]),
        ("B", &["A"]),
        ("C", &["A"]),
        ("D", &["B"]),
        ("E", &["B", "C"]),
    ])
}

#[test]
fn readiness_table() {
    let mut g = spec_graph();
    run_steps(
        &mut g,
        &[
            Success("A", &["B", "C"]),
            Success("B", &["D"]), // E still waits for C.
            Success("C", &["E"]),
            Reset("D"),
            Reset("E"),
            // B and C were never reset, so they are still (again) ready.
            Success("A", &["B", "C"]),
            // A 2-parent child with one parent succeeding twice still needs the other.
            Success("B", &["D"]),
            Success("B", &["D"]),
            Success("C", &["E"]),
            Reset("E"),
            Success("C", &[]),
            Success("B", &["D", "E"]),
            // Jobs without children and unknown jobs make nothing ready.
            Success("E", &[]),
            Success("nope", &[]),
        ],
    );
}

#[test]
fn readiness_2x_integration_shape() {
    let mut g = build(&[
        ("job1", &[]),
        ("job2", &[]),
        ("job3", &["job1"]),
        ("job4", &["job1", "job2"]),
        ("job5", &["job1", "job2", "job3"]),
    ]);
    run_steps(
        &mut g,
        &[
            Success("job1", &["job3"]),
            Success("job2", &["job4"]),
            Reset("job3"),
            Reset("job4"),
            Success("job3", &["job5"]),
        ],
    );
}

#[test]
fn changing_parents_keeps_flags_of_remaining_edges() {
    let mut g = build(&[("a", &[]), ("b", &[]), ("c", &[]), ("x", &["a", "b"])]);
    assert_eq!(g.record_success("a"), Vec::<String>::new());
    g.set_parents("x", &strings(&["c", "a"])).unwrap();
    assert_eq!(g.parents("x"), strings(&["a", "c"]));
    assert_eq!(g.satisfied_parents("x"), strings(&["a"]));
    assert_eq!(g.record_success("c"), strings(&["x"]));
    // Becoming a scheduled job drops every parent.
    g.set_parents("x", &[]).unwrap();
    assert_eq!(g.parents("x"), Vec::<String>::new());
    assert_eq!(g.children("a"), Vec::<String>::new());
}

#[test]
fn remove_job_returns_children_and_removes_edges() {
    let mut g = build(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "a"])]);
    assert_eq!(g.remove_job("a"), strings(&["b", "c", "d"]));
    assert!(!g.contains("a"));
    assert_eq!(g.len(), 3);
    assert_eq!(g.names(), strings(&["b", "c", "d"]));
    assert_eq!(g.parents("b"), Vec::<String>::new());
    assert_eq!(g.parents("d"), strings(&["b"]));
    assert_eq!(g.remove_job("a"), Vec::<String>::new());
    assert_eq!(g.remove_job("d"), Vec::<String>::new());
    assert_eq!(g.children("b"), Vec::<String>::new());
    g.remove_job("b");
    g.remove_job("c");
    assert!(g.is_empty());
    assert_eq!(g.to_dot(), "digraph G {\n}\n");
}

#[test]
fn satisfied_parents_round_trip() {
    let mut g = build(&[("p1", &[]), ("p2", &[]), ("p3", &[]), ("c", &["p1", "p2", "p3"])]);
    g.record_success("p3");
    g.record_success("p1");
    let saved = g.satisfied_parents("c");
    assert_eq!(saved, strings(&["p1", "p3"]));

    // A restarted scheduler rebuilds the graph with fresh flags, then restores.
    let mut restored = build(&[("p1", &[]), ("p2", &[]), ("p3", &[]), ("c", &["p1", "p2", "p3"])]);
    let mut with_noise = saved.clone();
    with_noise.push("gone".into());
    restored.restore_satisfied("c", &with_noise);
    restored.restore_satisfied("unknown", &saved);
    assert_eq!(restored.satisfied_parents("c"), saved);
    assert_eq!(restored.record_success("p2"), strings(&["c"]));

    // Restoring sets exactly the persisted flags.
    restored.restore_satisfied("c", &strings(&["p2"]));
    assert_eq!(restored.satisfied_parents("c"), strings(&["p2"]));
}

#[test]
fn basics() {
    let mut g = JobGraph::new();
    assert!(g.is_empty());
    g.add_job("a");
    g.add_job("a");
    assert_eq!(g.len(), 1);
    assert!(g.contains("a"));
    assert!(!g.contains("b"));
    assert_eq!(g.parents("nope"), Vec::<String>::new());
    assert_eq!(g.children("nope"), Vec::<String>::new());
    assert_eq!(g.satisfied_parents("nope"), Vec::<String>::new());
    g.reset("nope");
    // Duplicate parents count once.
    g.set_parents("b", &strings(&["a", "a"])).unwrap();
    assert_eq!(g.parents("b"), strings(&["a"]));
    // A clone is independent.
    let copy = g.clone();
    g.remove_job("a");
    assert_eq!(copy.parents("b"), strings(&["a"]));
}

#[test]
fn dot_golden() {
    let table: Vec<(&str, JobGraph, &str)> = vec![
        ("empty", JobGraph::new(), "digraph G {\n}\n"),
        (
            "two nodes one edge",
            build(&[("parentJob", &[]), ("childJob", &["parentJob"])]),
            "digraph G {\n  1 [ label=\"parentJob\" ];\n  2 [ label=\"childJob\" ];\n  1 -> 2;\n}\n",
        ),
        (
            "ids renumbered after a removal",
            {
                let mut g = build(&[("a", &[]), ("b", &[]), ("c", &["b"]), ("d", &["c", "a"])]);
                g.remove_job("a");
                g
            },
            "digraph G {\n  1 [ label=\"b\" ];\n  2 [ label=\"c\" ];\n  3 [ label=\"d\" ];\n  1 -> 2;\n  2 -> 3;\n}\n",
        ),
        (
            "a reused slot keeps insertion order",
            {
                let mut g = build(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]);
                g.remove_job("a");
                g.set_parents("z", &strings(&["c"])).unwrap();
                g.set_parents("b", &strings(&["z"])).unwrap_err();
                g.set_parents("c", &strings(&["b"])).unwrap();
                g.add_job("y");
                g.set_parents("b", &strings(&["y"])).unwrap();
                g
            },
            "digraph G {\n  1 [ label=\"b\" ];\n  2 [ label=\"c\" ];\n  3 [ label=\"z\" ];\n  4 [ label=\"y\" ];\n  1 -> 2;\n  2 -> 3;\n  4 -> 1;\n}\n",
        ),
        (
            "quotes and backslashes are escaped",
            build(&[("a\"b", &[]), ("c\\d", &["a\"b"])]),
            "digraph G {\n  1 [ label=\"a\\\"b\" ];\n  2 [ label=\"c\\\\d\" ];\n  1 -> 2;\n}\n",
        ),
    ];
    for (what, g, expected) in table {
        assert_eq!(g.to_dot(), expected, "{what}");
    }
}

#[test]
fn csv_golden() {
    let mut g = build(&[("a", &[]), ("b", &[]), ("c", &["b", "a"])]);
    g.set_parents("b", &strings(&["a"])).unwrap();
    let state = |name: &str| match name {
        "a" => ("success".to_owned(), "idle".to_owned()),
        "b" => ("failure".to_owned(), "running".to_owned()),
        _ => ("none".to_owned(), "queued".to_owned()),
    };
    assert_eq!(
        g.to_csv(state),
        "node,a,success,idle\nnode,b,failure,running\nnode,c,none,queued\n\
         link,b,c\nlink,a,c\nlink,a,b\n"
    );
    assert_eq!(JobGraph::new().to_csv(state), "");
}

/// 10,000 vertices and 20,000 edges: the export is complete and well-formed.
/// The timing budget is checked by `dot_is_fast`, which needs a release build.
fn big_graph() -> JobGraph {
    let mut g = JobGraph::new();
    let names: Vec<String> = (0..10_000).map(|i| format!("job-{i}")).collect();
    g.add_job(&names[0]);
    g.add_job(&names[1]);
    for i in 2..names.len() {
        g.set_parents(&names[i], &[names[i - 1].clone(), names[i / 2 - 1].clone()])
            .unwrap();
    }
    g
}

#[test]
fn dot_of_a_big_graph() {
    let g = big_graph();
    let dot = g.to_dot();
    let edges = dot.lines().filter(|l| l.contains("->")).count();
    assert_eq!(dot.lines().count(), 2 + 10_000 + edges);
    assert!(edges >= 19_990, "{edges}");
    assert!(dot.ends_with("}\n"));
}

/// A naive reference model: plain vectors in insertion order and reachability
/// by repeated scanning, obviously correct if slow.
#[derive(Debug, Default, Clone)]
struct Model {
    jobs: Vec<String>,
    /// (parent, child, satisfied) in insertion order.
    edges: Vec<(String, String, bool)>,
}

impl Model {
    fn add(&mut self, job: &str) {
        if !self.jobs.iter().any(|j| j == job) {
            self.jobs.push(job.to_owned());
        }
    }

    fn reaches(&self, from: &str, to: &str) -> bool {
        let mut seen = vec![from.to_owned()];
        let mut i = 0;
        while i < seen.len() {
            if seen[i] == to {
                return true;
            }
            for (p, c, _) in &self.edges {
                if *p == seen[i] && !seen.contains(c) {
                    seen.push(c.clone());
                }
            }
            i += 1;
        }
        false
    }

    fn set_parents(&mut self, child: &str, parents: &[String]) -> bool {
        let ok = parents
            .iter()
            .all(|p| p != child && self.jobs.contains(p) && !self.reaches(child, p));
        if !ok {
            return false;
        }
        self.add(child);
        self.edges.retain(|(p, c, _)| c != child || parents.contains(p));
        for p in parents {
            if !self.edges.iter().any(|(q, c, _)| q == p && c == child) {
                self.edges.push((p.clone(), child.to_owned(), false));
            }
        }
        true
    }

    fn remove(&mut self, job: &str) -> Vec<String> {
        if !self.jobs.iter().any(|j| j == job) {
            return Vec::new();
        }
        let children = self.children(job);
        self.jobs.retain(|j| j != job);
        self.edges.retain(|(p, c, _)| p != job && c != job);
        children
    }

    fn children(&self, job: &str) -> Vec<String> {
        self.edges
            .iter()
            .filter(|(p, _, _)| p == job)
            .map(|(_, c, _)| c.clone())
            .collect()
    }

    fn record_success(&mut self, job: &str) -> Vec<String> {
        for (p, _, s) in &mut self.edges {
            if p == job {
                *s = true;
            }
        }
        let edges = &self.edges;
        self.children(job)
            .into_iter()
            .filter(|child| edges.iter().all(|(_, c, s)| c != child || *s))
            .collect()
    }

    fn reset(&mut self, job: &str) {
        for (_, c, s) in &mut self.edges {
            if c == job {
                *s = false;
            }
        }
    }

    fn dot(&self) -> String {
        let ids: HashMap<&str, usize> = self
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.as_str(), i + 1))
            .collect();
        let mut out = String::from("digraph G {\n");
        for j in &self.jobs {
            out += &format!("  {} [ label=\"{j}\" ];\n", ids[j.as_str()]);
        }
        for (p, c, _) in &self.edges {
            out += &format!("  {} -> {};\n", ids[p.as_str()], ids[c.as_str()]);
        }
        out + "}\n"
    }
}

#[derive(Debug, Clone)]
enum Op {
    AddJob(usize),
    SetParents(usize, Vec<usize>),
    RemoveJob(usize),
    RecordSuccess(usize),
    Reset(usize),
}

const POOL: usize = 7;

fn job(i: usize) -> String {
    format!("j{i}")
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..POOL).prop_map(Op::AddJob),
        6 => (0..POOL, prop::collection::vec(0..POOL, 0..4)).prop_map(|(c, ps)| Op::SetParents(c, ps)),
        1 => (0..POOL).prop_map(Op::RemoveJob),
        3 => (0..POOL).prop_map(Op::RecordSuccess),
        2 => (0..POOL).prop_map(Op::Reset),
    ]
}

/// Acyclicity checked independently of the module, via a fresh petgraph graph
/// built from the public API.
fn is_acyclic(g: &JobGraph) -> bool {
    let names = g.names();
    let mut pg = DiGraph::<(), ()>::new();
    let ids: HashMap<&str, _> = names.iter().map(|n| (n.as_str(), pg.add_node(()))).collect();
    for n in &names {
        for p in g.parents(n) {
            pg.add_edge(ids[p.as_str()], ids[n.as_str()], ());
        }
    }
    !petgraph::algo::is_cyclic_directed(&pg)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_model(ops in prop::collection::vec(op(), 0..60)) {
        let mut g = JobGraph::new();
        let mut model = Model::default();
        for op in ops {
            match &op {
                Op::AddJob(i) => {
                    g.add_job(&job(*i));
                    model.add(&job(*i));
                }
                Op::SetParents(c, ps) => {
                    let (child, parents) = (job(*c), ps.iter().map(|&p| job(p)).collect::<Vec<_>>());
                    let before = snapshot(&g);
                    let checked = g.check_parents(&child, &parents);
                    let result = g.set_parents(&child, &parents);
                    let accepted = model.set_parents(&child, &parents);
                    prop_assert_eq!(result.is_ok(), accepted, "{:?}: {:?}", op, result);
                    if parents.is_empty() {
                        prop_assert!(checked.is_err());
                    } else {
                        prop_assert_eq!(&checked, &result);
                    }
                    if let Err(problems) = &result {
                        prop_assert_eq!(snapshot(&g), before, "a rejected change altered the graph");
                        let mut sorted = problems.clone();
                        sorted.sort();
                        sorted.dedup();
                        prop_assert_eq!(&sorted, problems);
                        for problem in problems {
                            if let Error::Cycle { path } = problem {
                                // The path is a real cycle through the new edge.
                                prop_assert_eq!(path.first(), Some(&child));
                                prop_assert_eq!(path.last(), Some(&child));
                                prop_assert!(parents.contains(&path[path.len() - 2]));
                                for pair in path[..path.len() - 1].windows(2) {
                                    prop_assert!(g.parents(&pair[1]).contains(&pair[0]));
                                }
                            }
                        }
                    }
                }
                Op::RemoveJob(i) => {
                    prop_assert_eq!(g.remove_job(&job(*i)), model.remove(&job(*i)));
                }
                Op::RecordSuccess(i) => {
                    let ready = g.record_success(&job(*i));
                    for child in &ready {
                        prop_assert_eq!(g.satisfied_parents(child), g.parents(child));
                    }
                    prop_assert_eq!(ready, model.record_success(&job(*i)));
                }
                Op::Reset(i) => {
                    g.reset(&job(*i));
                    model.reset(&job(*i));
                    prop_assert_eq!(g.satisfied_parents(&job(*i)), Vec::<String>::new());
                }
            }
            prop_assert!(is_acyclic(&g));
            prop_assert_eq!(g.to_dot(), model.dot());
            prop_assert_eq!(g.names(), model.jobs.clone());
            prop_assert_eq!(g.len(), model.jobs.len());
            for name in &model.jobs {
                let satisfied: Vec<String> = model
                    .edges
                    .iter()
                    .filter(|(_, c, s)| c == name && *s)
                    .map(|(p, _, _)| p.clone())
                    .collect();
                prop_assert_eq!(g.satisfied_parents(name), satisfied);
                prop_assert_eq!(g.children(name), model.children(name));
            }
        }
    }

    #[test]
    fn satisfied_parents_round_trip_for_any_flags(
        parents in prop::collection::vec(0..POOL, 1..POOL),
        successes in prop::collection::vec(0..POOL, 0..10),
    ) {
        let mut g = JobGraph::new();
        for i in 0..POOL {
            g.add_job(&job(i));
        }
        let parents: Vec<String> = parents.into_iter().map(job).collect();
        g.set_parents("child", &parents).unwrap();
        for s in successes {
            g.record_success(&job(s));
        }
        let saved = g.satisfied_parents("child");
        let mut copy = g.clone();
        copy.reset("child");
        copy.restore_satisfied("child", &saved);
        prop_assert_eq!(snapshot(&copy), snapshot(&g));
    }
}
