//! Criterion benchmarks of the pure parts of kairos: schedule arithmetic, the dependency graph and placement.
//!
//! Run with `cargo bench --bench pure`; results are written up in `docs/performance-pure.md`. Every input is built
//! deterministically (fixed dates, a seeded generator), so two runs measure the same work.

use std::collections::{HashSet, VecDeque};
use std::hint::black_box;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kairos::graph::JobGraph;
use kairos::graph::layout::{Activity, Node, NodeState, Outcome, SvgOptions, layout, render_svg};
use kairos::placement::{Constraint, Needs, Offer, Resources, Runs, place};
use kairos::schedule::{self, Schedule};

/// SplitMix64: a tiny seeded generator, so that the graph and the workers are the same on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn parsed(text: &str, zone: &str) -> Schedule {
    schedule::parse(text, zone, utc(2026, 1, 1, 0, 0, 0))
        .unwrap_or_else(|e| panic!("parsing {text:?} in {zone:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------------
// schedule

fn bench_schedule(c: &mut Criterion) {
    let now = utc(2026, 1, 1, 0, 0, 0);
    let mut group = c.benchmark_group("schedule");
    group.throughput(Throughput::Elements(1));

    group.bench_function("parse/P1D-Paris", |b| {
        b.iter(|| {
            schedule::parse(
                black_box("R/2026-01-01T02:30:00/P1D"),
                black_box("Europe/Paris"),
                now,
            )
        })
    });

    let cases = [
        ("advance/PT1S-UTC", parsed("R/2026-01-01T00:00:00Z/PT1S", "")),
        (
            "advance/P1D-Paris",
            parsed("R/2026-01-01T02:30:00/P1D", "Europe/Paris"),
        ),
        ("advance/P1M-UTC", parsed("R/2026-01-31T00:00:00Z/P1M", "")),
        ("advance/cron-every-10s-UTC", parsed("*/10 * * * * *", "")),
        // Real time in a zone with daylight saving: each step looks for a change of offset.
        ("advance/cron-hourly-Paris", parsed("0 * * * *", "Europe/Paris")),
        ("advance/cron-02:30-Paris", parsed("30 2 * * *", "Europe/Paris")),
    ];
    for (name, s) in &cases {
        group.bench_function(*name, |b| b.iter(|| black_box(s).advance()));
    }

    // Ten years behind: PT1S is skipped arithmetically (one jump), P1D in a zone with daylight saving one step at a
    // time.
    let epsilon = Duration::seconds(60);
    let behind = [
        (
            "skip_missed/10y-PT1S-UTC-jump",
            parsed("R/2016-01-01T00:00:00Z/PT1S", ""),
        ),
        (
            "skip_missed/10y-P1D-Paris-steps",
            parsed("R/2016-01-01T02:30:00/P1D", "Europe/Paris"),
        ),
        // Cron counts each skipped run, one step at a time: a day of a run a minute.
        ("skip_missed/1d-cron-every-minute-Paris-steps", {
            let mut s = parsed("* * * * *", "Europe/Paris");
            s.resume((now - Duration::days(1)).timestamp_millis());
            s
        }),
    ];
    for (name, s) in &behind {
        let (_, skipped) = s.skip_missed(now, epsilon);
        eprintln!("{name}: skips {skipped} occurrences");
        group.bench_function(*name, |b| b.iter(|| black_box(s).skip_missed(now, epsilon)));
    }

    let paris = schedule::parse_interval("R/2026-01-01T02:30:00/P1D", "Europe/Paris", now).unwrap();
    group.bench_function("render/P1D-Paris", |b| b.iter(|| black_box(&paris).render()));
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// graph

const JOBS: usize = 10_000;
const EDGES: usize = 20_000;
const FAN_OUT: usize = 1_000;

fn job_name(i: usize) -> String {
    format!("job-{i:05}")
}

/// The parents of each of `JOBS` jobs, `EDGES` distinct edges in all: each edge picks a child at random and a parent
/// at random among the jobs before it, so the graph is acyclic. Jobs that drew no parent are roots.
fn dag_spec() -> Vec<Vec<String>> {
    let mut rng = SplitMix64(0x6b61_6972_6f73);
    let mut parents = vec![Vec::new(); JOBS];
    let mut seen = HashSet::with_capacity(EDGES);
    while seen.len() < EDGES {
        let child = 1 + rng.below(JOBS - 1);
        let parent = rng.below(child);
        if seen.insert((parent, child)) {
            parents[child].push(job_name(parent));
        }
    }
    parents
}

fn build_dag(spec: &[Vec<String>]) -> JobGraph {
    let mut graph = JobGraph::new();
    for (i, parents) in spec.iter().enumerate() {
        let name = job_name(i);
        if parents.is_empty() {
            graph.add_job(&name);
        } else {
            graph
                .set_parents(&name, parents)
                .expect("parents come before their children");
        }
    }
    graph
}

/// Every job reachable from `start` through children, in breadth-first order (without `start`).
fn descendants(graph: &JobGraph, start: &str) -> Vec<String> {
    let mut seen = HashSet::from([start.to_owned()]);
    let mut queue = VecDeque::from([start.to_owned()]);
    let mut order = Vec::new();
    while let Some(name) = queue.pop_front() {
        for child in graph.children(&name) {
            if seen.insert(child.clone()) {
                order.push(child.clone());
                queue.push_back(child);
            }
        }
    }
    order
}

fn bench_graph(c: &mut Criterion) {
    let spec = dag_spec();
    let graph = build_dag(&spec);
    let roots = spec.iter().filter(|p| p.is_empty()).count();
    eprintln!("graph: {} jobs, {EDGES} edges, {roots} roots", graph.len());

    let mut group = c.benchmark_group("graph");
    group.sample_size(20);
    group.measurement_time(StdDuration::from_secs(4));

    group.throughput(Throughput::Elements((JOBS + EDGES) as u64));
    group.bench_function("build/10k-jobs-20k-edges", |b| {
        b.iter_with_large_drop(|| build_dag(black_box(&spec)))
    });

    let dot = graph.to_dot();
    group.throughput(Throughput::Bytes(dot.len() as u64));
    group.bench_function("to_dot/10k-jobs-20k-edges", |b| {
        b.iter(|| black_box(&graph).to_dot())
    });

    let state = |_: &str| ("success".to_owned(), "idle".to_owned());
    let csv = graph.to_csv(state);
    group.throughput(Throughput::Bytes(csv.len() as u64));
    group.bench_function("to_csv/10k-jobs-20k-edges", |b| {
        b.iter(|| black_box(&graph).to_csv(state))
    });
    eprintln!("graph: dot is {} bytes, csv is {} bytes", dot.len(), csv.len());

    // A new job cannot close a cycle, so this checks that the parents exist and skips the search.
    let new_parents = [job_name(42), job_name(5_000), job_name(9_999)];
    assert!(graph.check_parents("new-job", &new_parents).is_ok());
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_parents/new-job-3-parents", |b| {
        b.iter(|| black_box(&graph).check_parents("new-job", black_box(&new_parents)))
    });

    // An existing job searches everything below it: earlier jobs are never below it (no cycle, the whole search
    // runs), and the last three jobs the search meets close three cycles.
    let existing = job_name(100);
    let below = descendants(&graph, &existing);
    eprintln!("graph: {existing} has {} descendants", below.len());
    let earlier = [job_name(1), job_name(2), job_name(3)];
    assert!(graph.check_parents(&existing, &earlier).is_ok());
    let cyclic: Vec<String> = below.iter().rev().take(3).cloned().collect();
    assert_eq!(
        graph.check_parents(&existing, &cyclic).map_err(|e| e.len()),
        Err(3)
    );
    group.throughput(Throughput::Elements(below.len() as u64));
    group.bench_function("check_parents/existing-job-no-cycle", |b| {
        b.iter(|| black_box(&graph).check_parents(&existing, black_box(&earlier)))
    });
    group.bench_function("check_parents/existing-job-3-cycles", |b| {
        b.iter(|| black_box(&graph).check_parents(&existing, black_box(&cyclic)))
    });

    // A hub with 1,000 children, added to the big graph: the hub succeeds, then every (now ready) child starts a run
    // and resets its incoming edge.
    let mut fan = graph.clone();
    fan.add_job("hub");
    let hub = vec!["hub".to_owned()];
    for k in 0..FAN_OUT {
        fan.set_parents(&format!("fan-{k:04}"), &hub).unwrap();
    }
    assert_eq!(fan.record_success("hub").len(), FAN_OUT);
    group.throughput(Throughput::Elements(FAN_OUT as u64));
    group.bench_function("record_success/hub-1k-children", |b| {
        b.iter(|| fan.record_success(black_box("hub")))
    });
    group.bench_function("record_success+reset/hub-1k-children", |b| {
        b.iter(|| {
            let ready = fan.record_success(black_box("hub"));
            for child in &ready {
                fan.reset(child);
            }
            ready
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// placement

/// `n` workers with 8 cpus, 32 GB of memory and 200 GB of disk each, split between two data centres and ten racks,
/// and each resource used at a random level between idle and full.
fn offers(n: usize) -> Vec<Offer> {
    const LEVELS: [f64; 6] = [0.0, 0.25, 0.5, 0.75, 0.95, 1.0];
    let mut rng = SplitMix64(n as u64);
    let total = Resources {
        cpus: 8.0,
        mem: 32_768.0,
        disk: 204_800.0,
    };
    (0..n)
        .map(|i| {
            let mut level = || LEVELS[rng.below(LEVELS.len())];
            let used = Resources {
                cpus: total.cpus * level(),
                mem: total.mem * level(),
                disk: total.disk * level(),
            };
            let dc = if i % 2 == 0 { "north" } else { "south" };
            Offer {
                worker: format!("worker-{i:04}"),
                hostname: format!("host-{i:04}.example.com"),
                attributes: vec![
                    ("dc".to_owned(), dc.to_owned()),
                    ("rack".to_owned(), format!("rack-{}", i % 10)),
                    ("os".to_owned(), "linux".to_owned()),
                ],
                total,
                used,
                runs: Runs::EVERYTHING,
            }
        })
        .collect()
}

fn bench_placement(c: &mut Criterion) {
    let need = Resources {
        cpus: 1.0,
        mem: 2_048.0,
        disk: 1_024.0,
    };
    let constraints = [
        Constraint::compile("dc", "EQUALS", "north").unwrap(),
        Constraint::compile("rack", "LIKE", "rack-[0-7]").unwrap(),
    ];
    let mut group = c.benchmark_group("placement");
    for n in [10, 100, 1_000] {
        let workers = offers(n);
        let chosen = place(&need, Needs::default(), &constraints, &workers).expect("some worker fits");
        eprintln!("placement: {n} workers, chose {}", workers[chosen].worker);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("place", n), &workers, |b, workers| {
            b.iter(|| {
                place(
                    black_box(&need),
                    Needs::default(),
                    black_box(&constraints),
                    black_box(workers),
                )
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(StdDuration::from_millis(500))
        .measurement_time(StdDuration::from_secs(2))
        .sample_size(50)
}

// The graph drawing: layout and SVG rendering of 1,000 jobs with 2,000 edges.
/// Jobs and edges of the drawn graphs: two shapes from a seeded generator, `random` (a parent
/// is any earlier job: long edges everywhere, the worst case) and `local` (a parent is one of the
/// 30 jobs before, like long pipelines).
const DRAWN_JOBS: usize = 1_000;
const DRAWN_EDGES: usize = 2_000;

fn layout_job_name(i: usize) -> String {
    format!("team-{}-job-{i:04}", i % 17)
}

/// `DRAWN_JOBS` jobs with mixed states and `DRAWN_EDGES` distinct edges, each from a job to a later one at most `reach` jobs
/// before it, so the graph is acyclic.
fn dag(reach: usize) -> (Vec<Node>, Vec<(String, String)>) {
    let mut rng = SplitMix64(0x6b61_6972_6f73);
    let nodes = (0..DRAWN_JOBS)
        .map(|i| Node {
            name: layout_job_name(i),
            state: NodeState {
                outcome: [Outcome::Success, Outcome::Failure, Outcome::NeverRun][i % 3],
                activity: [
                    Activity::Idle,
                    Activity::Idle,
                    Activity::Running,
                    Activity::Queued,
                ][i % 4],
                disabled: i % 23 == 0,
            },
        })
        .collect();
    let mut seen = HashSet::with_capacity(DRAWN_EDGES);
    let mut edges = Vec::with_capacity(DRAWN_EDGES);
    while edges.len() < DRAWN_EDGES {
        let child = 1 + rng.below(DRAWN_JOBS - 1);
        let parent = child - 1 - rng.below(child.min(reach));
        if seen.insert((parent, child)) {
            edges.push((layout_job_name(parent), layout_job_name(child)));
        }
    }
    (nodes, edges)
}

fn bench_layout(c: &mut Criterion) {
    let mut group = c.benchmark_group("layout");
    group.sample_size(20);
    group.measurement_time(StdDuration::from_secs(4));
    group.throughput(Throughput::Elements((DRAWN_JOBS + DRAWN_EDGES) as u64));
    let opts = SvgOptions::default();
    for (shape, reach) in [("random", DRAWN_JOBS), ("local", 30)] {
        let (nodes, edges) = dag(reach);
        let drawn = layout(&nodes, &edges).expect("an acyclic graph");
        let svg = render_svg(&drawn, &opts);
        let points: usize = drawn.edges.iter().map(|e| e.points.len()).sum();
        eprintln!(
            "layout/{shape}: {:.0}x{:.0} px, {points} edge points, svg {} bytes",
            drawn.width,
            drawn.height,
            svg.len()
        );
        group.bench_with_input(
            BenchmarkId::new("layout", shape),
            &(&nodes, &edges),
            |b, (nodes, edges)| b.iter(|| layout(black_box(nodes), black_box(edges))),
        );
        group.bench_with_input(BenchmarkId::new("render_svg", shape), &drawn, |b, drawn| {
            b.iter(|| render_svg(black_box(drawn), black_box(&opts)))
        });
        group.bench_with_input(
            BenchmarkId::new("both", shape),
            &(&nodes, &edges),
            |b, (nodes, edges)| {
                b.iter(|| {
                    render_svg(
                        &layout(black_box(nodes), black_box(edges)).unwrap(),
                        black_box(&opts),
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_schedule, bench_graph, bench_placement, bench_layout
}
criterion_main!(benches);
